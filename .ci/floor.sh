#!/usr/bin/env bash
# The floor of the supported transformers range: builds a second environment with transformers 5.19.0 (what the
# released vLLM and SGLang builds pin; requirements.txt pins the tested 5.23.0) and Pillow 13 (requirements.txt pins
# 12.3.0: the tiles must not depend on the Pillow major) and runs the whole suite there (the web demo's tests run in
# the main environment, which has gradio). About 1 min to install and 5 min to test on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m venv .venv-floor
# requirements-dev.txt with transformers 5.19.0 and pillow 13.0.0 in place of the pins (tokenizers 0.23.3 satisfies
# both transformers).
sed -e 's/^transformers==.*/transformers==5.19.0/' -e 's/^pillow==.*/pillow==13.0.0/' requirements.txt \
    > .venv-floor/requirements-floor.txt
grep -v '^-r ' requirements-dev.txt >> .venv-floor/requirements-floor.txt
.venv-floor/bin/pip install -q -r .venv-floor/requirements-floor.txt
.venv-floor/bin/python -c "import PIL, transformers; assert (transformers.__version__, PIL.__version__) == ('5.19.0', '13.0.0')"
.venv-floor/bin/python -m pytest -q --ignore tests/test_web_demo.py --ignore tests/test_web_demo_handlers.py
