#!/usr/bin/env bash
# Serving: installs the pinned vLLM CPU build (requirements-serve.txt, its own environment, ~2 min and 3.5 GB) and
# runs serving_tests/ there: offline `vllm.LLM` and the OpenAI-compatible server (started as the README says) against
# `generate()`, text conditioning on. Not part of the main suite (pyproject's testpaths = tests). About 10 min on
# 2 cores, most of it two engine start-ups.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m venv .venv-serve
.venv-serve/bin/pip install -q --no-deps -r requirements-serve.txt
.venv-serve/bin/pip install -q --no-deps -e .
.venv-serve/bin/python -c "import vllm, transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
.venv-serve/bin/python -m pytest -q serving_tests
