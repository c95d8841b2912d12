"""The web demo's handlers without a browser: clicks become prompt dicts, painted layers become masks, answers stream,
and the "copy as code" box reproduces the page's answers through the Python API."""

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("gradio", reason="the web demo needs gradio (install requirements-web.txt as the README says)")

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_IMAGE = REPO_ROOT / "examples" / "demo.png"
README_BOX = [151, 43, 314, 206]


def load_app():
    spec = importlib.util.spec_from_file_location("web_demo_app", REPO_ROOT / "space" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


app = load_app()


@pytest.fixture(scope="module")
def web_demo():
    from vision_zephyr_tools import chat

    model, processor = chat.load_model_and_processor(str(REPO_ROOT / "demo"), "cpu", "auto")
    return app.WebDemo(model, processor, "demo")


def ask(web_demo, question: str, turns: list, prompts: list[dict]) -> tuple[list, list]:
    """Runs the Ask handler to its end; returns the new turns and every chat state the page was sent."""
    updates = list(web_demo.ask(question, turns, str(EXAMPLE_IMAGE), prompts, 64, 0.0))
    return updates[-1][1], [update[0] for update in updates]


def test_box_and_ellipse_corners_may_be_clicked_in_any_order():
    for kind in ("box", "ellipse"):
        prompt = app.prompt_from_clicks(kind, [[314, 206], [151, 43]], "red")
        assert prompt == {"type": kind, "xyxy": README_BOX, "color": "red"}, f"{kind} from reversed corners: {prompt}"


def test_arrow_keeps_its_direction_from_tail_to_head():
    prompt = app.prompt_from_clicks("arrow", [[314, 206], [151, 43]], "blue")
    assert prompt["xyxy"] == [314, 206, 151, 43], "the second click is the arrow's head"


def test_painted_layer_becomes_a_mask_of_the_image_size():
    layer = np.zeros((100, 200, 4), dtype=np.uint8)
    layer[10:20, 30:40, 3] = 255
    mask = app.mask_from_editor({"background": None, "layers": [layer], "composite": None}, (400, 200))
    assert mask.shape == (200, 400), f"the mask must be H×W of the image, got {mask.shape}"
    assert mask[25, 70] and not mask[0, 0], "the painted area (scaled ×2) must be inside the mask, the rest outside"


def test_unpainted_editor_gives_no_mask():
    blank = np.zeros((200, 400, 4), dtype=np.uint8)
    assert app.mask_from_editor({"background": None, "layers": [blank], "composite": None}, (400, 200)) is None


def test_answer_streams_into_the_chat(web_demo):
    prompts = [{"type": "box", "xyxy": README_BOX, "color": "red"}]
    turns, chat_states = ask(web_demo, "What shape is marked?", [], prompts)
    answer = turns[-1][1]
    streamed = [state[-1]["content"] for state in chat_states[:-1]]
    assert streamed, "the chat must be updated while the answer is generated, not only at the end"
    assert all(answer.startswith(text.strip()) for text in streamed), f"streamed {streamed}, answered {answer!r}"
    assert chat_states[-1][-1] == {"role": "assistant", "content": answer}


def test_copied_code_reproduces_the_second_answer_of_a_chat(web_demo, tmp_path, monkeypatch, capsys):
    prompts = [
        {"type": "box", "xyxy": README_BOX, "color": "red"},
        {"type": "point", "xy": [500, 300], "color": "lime"},
    ]
    turns, _ = ask(web_demo, "What shape is marked?", [], prompts)
    turns, _ = ask(web_demo, "What colour is it?", turns, prompts)
    code = web_demo.code(str(EXAMPLE_IMAGE), prompts, turns, "", 64, 0.0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").symlink_to(REPO_ROOT / "demo")
    shutil.copy(EXAMPLE_IMAGE, tmp_path / "demo.png")
    exec(compile(code, "copy-as-code", "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert printed == turns[-1][1], f"the copied code printed {printed!r}, the page answered {turns[-1][1]!r}"
