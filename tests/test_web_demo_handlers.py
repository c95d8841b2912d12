"""The web demo's handlers without a browser: clicks become prompt dicts, painted layers become masks, answers stream,
and the "copy as code" box reproduces the page's answers through the Python API."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest


if os.environ.get("VISION_ZEPHYR_REQUIRE_WEB_DEMO") != "1":  # CI's web step sets it: there a missing gradio fails
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


def test_a_failing_turn_shows_its_error_in_the_chat_and_the_next_question_is_answered(web_demo):
    prompts = [{"type": "box", "xyxy": README_BOX, "color": "red"}]
    updates = list(web_demo.ask("word " * 2000, [], str(EXAMPLE_IMAGE), prompts, 16, 0.0))
    chat, turns, question_box, status = updates[-1]
    assert turns == [], "a failed question is not part of the conversation"
    assert "The prompt is" in chat[-1]["content"] and "The prompt is" in status, (chat, status)
    assert question_box.startswith("word"), "the question stays in the box so that it can be shortened"
    turns, _ = ask(web_demo, "What color is the marked shape?", [], prompts)
    assert turns and turns[-1][1], "the next question must be answered"


def test_a_file_that_is_not_an_image_is_explained_on_the_page(web_demo, tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"this is not a png")
    payload = app.gr.FileData(path=str(fake), orig_name="photo.png")
    handed_over = app.UploadedImage(type="filepath").preprocess(payload)
    assert handed_over == str(fake), "the upload must reach the handler instead of failing inside gradio"
    canvas, *_, status, _code = web_demo.new_image(handed_over, "box", 64, 0.0)
    assert canvas is None and "cannot read" in status, status


def test_changing_the_prompts_mid_chat_starts_a_new_chat(web_demo):
    chat, turns, status = web_demo.prompts_changed(
        [{"type": "point", "xy": [5, 5]}], [("Q?", "red")], "1 prompt placed."
    )
    assert chat == [] and turns == [], "answers about the earlier prompts must not stay next to the new ones"
    assert "chat was cleared" in status
    assert all(value is not None for value in web_demo.prompts_changed([], [], "")), "without a chat nothing changes"


@pytest.mark.parametrize("kind, article", [("arrow", "an arrow"), ("ellipse", "an ellipse"), ("box", "a box")])
def test_status_uses_the_right_article_and_plural(kind, article):
    assert f"to place {article}." in app.click_status(kind, [], [])
    assert app.click_status(kind, [], [{"type": "box"}]).startswith("1 prompt placed.")


def test_the_first_click_of_a_two_click_prompt_is_drawn(web_demo):
    image = str(EXAMPLE_IMAGE)
    before = np.asarray(web_demo.drawn(image, []))
    after = np.asarray(web_demo.drawn(image, [], [[40, 40]], "red"))
    changed = np.argwhere((before != after).any(axis=-1))
    assert len(changed), "a pending click must be visible on the canvas"
    assert np.abs(changed.mean(axis=0) - [40, 40]).max() < 3, "the mark must sit at the clicked point"
