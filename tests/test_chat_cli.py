"""The chat CLI: one-shot answers, multi-turn history, the prompted image it saves, and its error messages."""

import builtins
import copy
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from vision_zephyr_tools import chat as chat_cli


CHAT_SCRIPT = chat_cli.__file__
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


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


# Errors inside generation reach the reader of the stream; bad flags fail at once in one line.

OVER_LONG_QUESTION = "word " * 2000  # more than the demo model's 1,024-token context


def run_cli_process(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """The CLI in its own process, so that a hang fails the test (TimeoutExpired) instead of stalling the suite."""
    command = [sys.executable, str(CHAT_SCRIPT), *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **OFFLINE})


def test_an_error_inside_generation_ends_the_cli_with_one_line_instead_of_hanging(image_path):
    finished = run_cli_process("--image", image_path, "--box", "10,10,100,100", OVER_LONG_QUESTION)
    assert finished.returncode == 1, finished.stderr
    errors = [line for line in finished.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "The prompt is" in errors[0], finished.stderr
    assert "Traceback" not in finished.stderr, finished.stderr


def test_answer_pieces_raises_the_generation_error_in_the_reader_thread(tiny_checkpoint, monkeypatch):
    model, processor = chat_cli.load_model_and_processor(str(tiny_checkpoint), "cpu", "auto")

    def failing_generate(**kwargs):
        kwargs["streamer"].put(torch.tensor([[1, 2]]))  # the prompt, then the failure mid-stream
        raise RuntimeError("out of memory while decoding")

    monkeypatch.setattr(model, "generate", failing_generate)
    outcome = {}

    def read_stream():
        try:
            list(chat_cli.answer_pieces(model, processor, [chat_cli.user_message("Q?")], 4, 0.0))
        except RuntimeError as error:
            outcome["error"] = error

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "the reader must not wait forever for a stream whose generation failed"
    assert "out of memory" in str(outcome.get("error")), f"the reader must get generate's own error, got {outcome}"


def test_a_reader_that_stops_early_stops_the_generation(tiny_checkpoint):
    model, processor = chat_cli.load_model_and_processor(str(tiny_checkpoint), "cpu", "auto")
    calls = []
    real_forward = model.forward
    model.forward = lambda *args, **kwargs: calls.append(1) or real_forward(*args, **kwargs)
    pieces = chat_cli.answer_pieces(model, processor, [chat_cli.user_message("Q?")], 200, 1.0)
    next(pieces)
    pieces.close()
    assert len(calls) < 50, f"generation went on for {len(calls)} steps after the reader left"


def test_interactive_chat_reports_a_failed_turn_and_answers_the_next(image_path, monkeypatch, capsys):
    questions = iter([OVER_LONG_QUESTION, "What color is the marked shape?", "quit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(questions))
    assert run_cli("--image", image_path, "--box", "10,10,100,100", "--max-new-tokens", "4") == 0
    captured = capsys.readouterr()
    assert "error: The prompt is" in captured.err
    assert captured.out.count("assistant:") == 2 and captured.out.rstrip().split("assistant:")[-1].strip(), (
        f"the question after the failed one must be answered, got {captured.out!r}"
    )


def test_ctrl_c_at_the_prompt_exits_quietly(tiny_checkpoint, image_path, monkeypatch, capsys):
    def interrupted(prompt=""):
        raise KeyboardInterrupt

    monkeypatch.setattr(builtins, "input", interrupted)
    assert run_cli("--model", tiny_checkpoint, "--image", image_path, "--point", "5,5") == 130
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra_args, message",
    [
        (["--max-new-tokens", "0"], "--max-new-tokens: expected a whole number >= 1"),
        (["--temperature", "-1"], "--temperature: expected a number >= 0"),
        (["--temperature", "nan"], "--temperature: expected a number >= 0"),
    ],
)
def test_bad_generation_settings_are_refused_in_one_line(image_path, capsys, extra_args, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--image", image_path, *extra_args, "Q?")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error


def test_a_typo_in_a_model_path_fails_at_once_without_asking_the_hub(image_path, monkeypatch, capsys):
    def no_hub(*args, **kwargs):
        raise AssertionError("a path that does not exist must not be looked up on the Hub")

    monkeypatch.setattr(chat_cli.AutoProcessor, "from_pretrained", no_hub)
    for typo in ("nope_dir", "./nope_dir", "demo/nope"):
        assert run_cli("--model", typo, "--image", image_path, "Q?") == 2
        assert f"--model {typo}: no such folder" in capsys.readouterr().err


def test_a_hub_repo_id_is_still_passed_to_from_pretrained():
    assert chat_cli.checked_model_location("someone/vision-zephyr-7b") == "someone/vision-zephyr-7b"


def test_save_prompted_into_a_missing_folder_fails_before_loading_the_model(image_path, monkeypatch, capsys):
    monkeypatch.setattr(chat_cli, "load_model_and_processor", lambda *args: pytest.fail("model loaded first"))
    assert run_cli("--image", image_path, "--box", "1,1,9,9", "--save-prompted", "/missing/dir/x.png", "Q?") == 2
    assert "--save-prompted /missing/dir/x.png: the folder /missing/dir does not exist" in capsys.readouterr().err


def test_negative_coordinates_are_read_as_the_flag_value(tiny_checkpoint, image_path, capsys):
    assert run_cli("--model", tiny_checkpoint, "--image", image_path, "--box", "-50,-50,-10,-10", "Q?") == 2
    error = capsys.readouterr().err
    assert "--box -50,-50,-10,-10: lies entirely outside the 400x300 image" in error, error


def test_errors_name_the_flag_the_user_typed(tiny_checkpoint, image_path, capsys):
    assert (
        run_cli("--model", tiny_checkpoint, "--image", image_path, "--point", "5,5", "--box", "100,10,5,50", "Q?") == 2
    )
    error = capsys.readouterr().err
    assert "--box 100,10,5,50: expected x1 <= x2" in error and "visual_prompts[" not in error, error
    assert (
        run_cli("--model", tiny_checkpoint, "--image", image_path, "--color", "octarine", "--point", "5,5", "Q?") == 2
    )
    error = capsys.readouterr().err
    assert "--color octarine:" in error and "visual_prompts[" not in error, error


def test_color_accepts_an_rgb_triple(tiny_checkpoint, image_path, tmp_path):
    saved = tmp_path / "prompted.png"
    argv = ["--model", tiny_checkpoint, "--image", image_path, "--box", "10,10,100,100", "--color", "0,0,255"]
    assert run_cli(*argv, "--save-prompted", saved, "--max-new-tokens", "1", "Q?") == 0
    red, green, blue = np.asarray(Image.open(saved))[10, 50].astype(int)
    assert blue == 255 and red < 200 and green < 200, f"the outline should be blue-tinted, got {(red, green, blue)}"


def test_a_question_without_any_visual_prompt_says_so(tiny_checkpoint, image_path, capsys):
    assert run_cli("--model", tiny_checkpoint, "--image", image_path, "--max-new-tokens", "1", "Q?") == 0
    assert "note: no visual prompt" in capsys.readouterr().err
