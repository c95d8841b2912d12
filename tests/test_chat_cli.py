"""The chat CLI: one-shot answers, multi-turn history, the prompted image it saves, and its error messages."""

import builtins
import copy

import numpy as np
import pytest
from PIL import Image

from vision_zephyr_tools import chat as chat_cli


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "image.png"
    Image.new("RGB", (400, 300), "white").save(path)
    return path


def run_cli(*argv: str) -> int:
    return chat_cli.main([str(arg) for arg in argv])


def test_one_shot_question_prints_an_answer_and_exits(tiny_checkpoint, image_path, capsys):
    status = run_cli(
        "--model",
        tiny_checkpoint,
        "--image",
        image_path,
        "--box",
        "10,10,100,100",
        "--max-new-tokens",
        "3",
        "What is marked?",
    )
    assert status == 0
    assert capsys.readouterr().out.strip(), "the streamed answer must be printed"


def test_save_prompted_writes_the_image_with_the_prompt_drawn(tiny_checkpoint, image_path, tmp_path):
    saved = tmp_path / "prompted.png"
    run_cli(
        "--model",
        tiny_checkpoint,
        "--image",
        image_path,
        "--box",
        "10,10,100,100",
        "--max-new-tokens",
        "1",
        "--save-prompted",
        saved,
        "Q?",
    )
    pixels = np.asarray(Image.open(saved))
    assert pixels.shape == (300, 400, 3)
    red, green, blue = pixels[10, 50].astype(int)
    assert red > 200 and green < 200 and blue < 200, f"the box outline should be red-tinted, got {pixels[10, 50]}"
    assert (pixels[50, 50] == 255).all(), "the inside of the box must stay untouched"


def test_interactive_chat_keeps_the_history(tiny_checkpoint, image_path, monkeypatch):
    questions = iter(["What is marked?", "And its colour?", "exit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(questions))
    recorded, real_stream_answer = [], chat_cli.stream_answer

    def recording_stream_answer(model, processor, messages, args):
        recorded.append(copy.deepcopy(messages))
        return real_stream_answer(model, processor, messages, args)

    monkeypatch.setattr(chat_cli, "stream_answer", recording_stream_answer)
    assert run_cli("--model", tiny_checkpoint, "--image", image_path, "--point", "50,50", "--max-new-tokens", "2") == 0
    second_turn = recorded[-1]
    assert [message["role"] for message in second_turn] == ["user", "assistant", "user"]
    first_answer = second_turn[1]["content"][0]["text"]
    assert first_answer, "the first answer must be kept in the history, not lost"
    assert second_turn[0]["content"][0]["type"] == "image", "the image stays in the first user turn"


@pytest.mark.parametrize(
    "extra_args, message",
    [
        (["--box", "10,10,5"], "--box expects 4"),
        (["--point", "a,b"], "--point expects comma-separated numbers"),
        (["--scribble", "1,2,3"], "--scribble expects an even number"),
        (["--box", "100,10,5,50"], "bad visual prompt"),
        (["--color", "octarine", "--point", "5,5"], "bad visual prompt"),
    ],
)
def test_bad_prompt_flags_give_a_clear_message(tiny_checkpoint, image_path, capsys, extra_args, message):
    assert run_cli("--model", tiny_checkpoint, "--image", image_path, *extra_args, "Q?") == 2
    assert message in capsys.readouterr().err


def test_missing_and_unreadable_images_give_a_clear_message(tiny_checkpoint, tmp_path, capsys):
    assert run_cli("--model", tiny_checkpoint, "--image", tmp_path / "missing.png", "Q?") == 2
    assert "no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert run_cli("--model", tiny_checkpoint, "--image", broken, "Q?") == 2
    assert "cannot read" in capsys.readouterr().err


def test_missing_model_gives_a_clear_message(image_path, tmp_path, capsys):
    assert run_cli("--model", tmp_path / "nowhere", "--image", image_path, "Q?") == 2
    assert "--model" in capsys.readouterr().err
