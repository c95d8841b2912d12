"""The README's "Serve it" walk-through on `demo/`, as written: its server command, its request-building snippet and
its request get the Quickstart's answer, the one `generate()` gives."""

import json
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import README, chat_inputs, readme_serve_block, running_server


REPO_ROOT = README.parent


@pytest.fixture(scope="module")
def readme_request(tmp_path_factory) -> dict:
    """The request the README's snippet writes, run from a folder that looks like the clone's root."""
    workdir = tmp_path_factory.mktemp("clone-root")
    for name in ("demo", "examples"):
        (workdir / name).symlink_to(REPO_ROOT / name)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        exec(compile(readme_serve_block("python"), "README.md (Serve it)", "exec"), {})
    return json.loads((workdir / "request.json").read_text())


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    with running_server(Path("demo"), tmp_path_factory.mktemp("demo-server") / "server.log") as url:
        yield url


def generated_answer(question: str, box: list[int], max_new_tokens: int) -> str:
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(REPO_ROOT / "demo", trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(REPO_ROOT / "demo", trust_remote_code=True).eval()
    image = Image.open(REPO_ROOT / "examples" / "demo.png")
    prompt = {"type": "box", "xyxy": box, "color": "red"}
    inputs = chat_inputs(processor, [(image, [prompt])], question)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(output[0, inputs.input_ids.shape[1] :], skip_special_tokens=True).strip()


def test_the_readme_request_to_the_readme_server_on_demo_answers_like_generate(demo_server, readme_request):
    request = urllib.request.Request(
        f"{demo_server}/v1/chat/completions", json.dumps(readme_request).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        served = json.load(response)["choices"][0]["message"]["content"].strip()
    question = readme_request["messages"][0]["content"][1]["text"]
    expected = generated_answer(question, [151, 43, 314, 206], readme_request["max_tokens"])
    assert expected == "yellow", "generate() no longer gives the Quickstart's answer (the marked shape is yellow)"
    assert served == expected
