"""`generate()` as transformers users drive it: `generation_config.json` defaults, `</s>`, stop strings, streaming."""

import json
import shutil
from pathlib import Path
from threading import Thread

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, TextIteratorStreamer


REPO_ROOT = Path(__file__).resolve().parent.parent
EOS_TOKEN_ID = 2
SHORT_MAX_NEW_TOKENS = 7


@pytest.fixture(scope="module")
def processor(tiny_checkpoint):
    return AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)


@pytest.fixture(scope="module")
def short_generation_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint with only `max_new_tokens` changed in its `generation_config.json` (so tests stay fast)."""
    folder = Path(shutil.copytree(tiny_checkpoint, tmp_path_factory.mktemp("short") / "checkpoint"))
    config_path = folder / "generation_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "max_new_tokens": SHORT_MAX_NEW_TOKENS}))
    return folder


@pytest.fixture(scope="module")
def short_model(short_generation_checkpoint):
    return AutoModelForImageTextToText.from_pretrained(short_generation_checkpoint, trust_remote_code=True).eval()


@pytest.fixture(scope="module")
def text_prompt(processor) -> dict[str, torch.Tensor]:
    messages = [{"role": "user", "content": "Describe a sunny day."}]
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def new_tokens(output: torch.Tensor, inputs: dict[str, torch.Tensor]) -> list[int]:
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def test_checkpoint_ships_greedy_decoding_that_stops_on_eos(tiny_checkpoint, processor):
    shipped = json.loads((REPO_ROOT / "generation_config.json").read_text())
    written = json.loads((Path(tiny_checkpoint) / "generation_config.json").read_text())
    # Only the stamp of the transformers release that wrote the file may differ (the tests run under 5.19 too).
    assert {**written, "transformers_version": None} == {**shipped, "transformers_version": None}
    assert shipped["do_sample"] is False
    assert shipped["eos_token_id"] == processor.tokenizer.eos_token_id == EOS_TOKEN_ID
    assert shipped["pad_token_id"] == processor.tokenizer.pad_token_id
    assert shipped["max_new_tokens"] >= 256, "answers with an explanation need room"


def test_generate_without_arguments_stops_at_the_configured_max_new_tokens(short_model, text_prompt):
    output = short_model.generate(**text_prompt)
    assert len(new_tokens(output, text_prompt)) == SHORT_MAX_NEW_TOKENS


def test_generate_without_arguments_is_greedy(short_model, text_prompt):
    default = short_model.generate(**text_prompt)
    with torch.no_grad():
        logits = short_model(**text_prompt).logits[0, -1]
    assert new_tokens(default, text_prompt)[0] == int(logits.argmax()), "the first token must be the argmax"
    assert torch.equal(default, short_model.generate(**text_prompt, do_sample=False))


def test_generate_stops_after_eos(short_generation_checkpoint, text_prompt):
    model = AutoModelForImageTextToText.from_pretrained(short_generation_checkpoint, trust_remote_code=True).eval()
    first_token = new_tokens(model.generate(**text_prompt, max_new_tokens=1), text_prompt)[0]
    with torch.no_grad():  # swap the head rows of that token and `</s>`: now the first greedy token is `</s>`
        rows = torch.tensor([first_token, EOS_TOKEN_ID])
        model.lm_head.weight[rows] = model.lm_head.weight[rows.flip(0)].clone()
    assert new_tokens(model.generate(**text_prompt), text_prompt) == [EOS_TOKEN_ID]


def test_stop_strings_end_generation_at_the_token_that_completes_the_string(short_model, processor, text_prompt):
    unconstrained = processor.decode(new_tokens(short_model.generate(**text_prompt), text_prompt))
    stop = unconstrained[len(unconstrained) // 2 :][:3]
    output = short_model.generate(**text_prompt, stop_strings=[stop], tokenizer=processor.tokenizer)
    stopped_tokens = new_tokens(output, text_prompt)
    stopped = processor.decode(stopped_tokens)
    assert stop in stopped and len(stopped) < len(unconstrained), f"{stop!r} should end {unconstrained!r} early"
    assert stop not in processor.decode(stopped_tokens[:-1]), f"{stopped!r} went on past {stop!r}"


def test_stop_strings_need_the_tokenizer(short_model, text_prompt):
    with pytest.raises(ValueError, match="tokenizer"):
        short_model.generate(**text_prompt, stop_strings=["."])


def test_text_iterator_streamer_yields_the_generated_text_in_pieces(short_model, processor):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    outputs = []
    thread = Thread(target=lambda: outputs.append(short_model.generate(**inputs, streamer=streamer)))
    thread.start()
    pieces = list(streamer)
    thread.join()
    assert len(pieces) > 1, f"expected the text in several pieces, got {pieces}"
    assert "".join(pieces) == processor.decode(new_tokens(outputs[0], inputs), skip_special_tokens=True)
