"""`pipeline("image-text-to-text")` runs the checkpoint folder as it is: chats (with visual prompts) and images+text."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline


NEW_TOKENS = 6
QUESTION = "What is in the picture?"
PLAIN_PROMPT = f"<image>\n{QUESTION}"


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return pipeline("image-text-to-text", model=str(tiny_checkpoint), trust_remote_code=True)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))


def chat(image: Image.Image, **image_fields) -> list[dict]:
    image_block = {"type": "image", "image": image, **image_fields}
    return [{"role": "user", "content": [image_block, {"type": "text", "text": QUESTION}]}]


def answer(pipe, messages: list[dict]) -> str:
    return pipe(text=messages, max_new_tokens=NEW_TOKENS, return_full_text=False)[0]["generated_text"]


def model_answer(pipe, messages: list[dict]) -> str:
    """What the README's processor + `generate` path answers, for comparison.

    Compared after `lstrip()`: decoding the new tokens alone drops the space of a leading `▁` token, the pipeline's
    whole-sequence decoding keeps it (a trained model answers without one after `<|assistant|>\n`; the random tiny
    model may not).
    """
    inputs = pipe.processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    output = pipe.model.generate(**inputs, max_new_tokens=NEW_TOKENS)
    return pipe.processor.post_process_image_text_to_text(output[:, inputs["input_ids"].shape[1] :])[0]


def test_pipeline_loads_the_remote_model_and_processor(pipe):
    assert type(pipe.model).__name__ == "VisionZephyrForConditionalGeneration"
    assert type(pipe.processor).__name__ == "VisionZephyrProcessor"


@pytest.fixture(scope="module")
def chat_answer(pipe, photo) -> str:
    return answer(pipe, chat(photo))


def test_chat_answer_equals_the_processor_and_generate_path(pipe, photo, chat_answer):
    assert chat_answer.lstrip() == model_answer(pipe, chat(photo))


def test_chat_image_blocks_pass_their_visual_prompts_to_the_processor(pipe, photo, monkeypatch):
    # An opaque mask over the whole image turns it into a flat colour: the model must be given exactly that image.
    opaque_blue = {"type": "mask", "mask": np.ones((48, 64), dtype=bool), "color": "blue", "alpha": 1.0}
    blue = Image.new("RGB", photo.size, (0, 0, 255))
    generate_calls = []
    generate = pipe.model.generate

    def recording_generate(**inputs):
        generate_calls.append(inputs)
        return generate(**inputs)

    monkeypatch.setattr(pipe.model, "generate", recording_generate)
    pipe(text=chat(photo, visual_prompts=[opaque_blue]), max_new_tokens=1)
    expected = pipe.processor(images=blue, text=PLAIN_PROMPT, return_tensors="pt")["pixel_values"]
    assert torch.equal(generate_calls[0]["pixel_values"], expected), (
        "visual prompts in a chat image block were not drawn"
    )


def test_full_chat_output_appends_the_assistant_turn(pipe, photo, chat_answer):
    messages = chat(photo)
    conversation = pipe(text=messages, max_new_tokens=NEW_TOKENS)[0]["generated_text"]
    assert conversation[:-1] == messages
    assert conversation[-1] == {"role": "assistant", "content": chat_answer}


@pytest.fixture(scope="module")
def new_text_for_images_and_text(pipe, photo) -> str:
    return pipe(images=photo, text=PLAIN_PROMPT, max_new_tokens=NEW_TOKENS, return_full_text=False)[0][
        "generated_text"
    ]


def test_images_and_text_arguments_generate_like_the_processor_path(pipe, photo, new_text_for_images_and_text):
    inputs = pipe.processor(images=photo, text=PLAIN_PROMPT, return_tensors="pt")
    output = pipe.model.generate(**inputs, max_new_tokens=NEW_TOKENS)
    expected = pipe.processor.post_process_image_text_to_text(output[:, inputs["input_ids"].shape[1] :])[0]
    assert new_text_for_images_and_text.lstrip() == expected


def test_return_full_text_gives_the_prompt_followed_by_the_new_text(pipe, photo, new_text_for_images_and_text):
    full = pipe(images=photo, text=PLAIN_PROMPT, max_new_tokens=NEW_TOKENS)[0]["generated_text"]
    assert full == PLAIN_PROMPT + new_text_for_images_and_text


def test_stop_sequence_ends_the_answer_at_that_text(pipe):
    messages = [{"role": "user", "content": "Describe a sunny day."}]
    unconstrained = answer(pipe, messages)
    stop = unconstrained[len(unconstrained) // 2 :][:3]
    stopped = pipe(text=messages, max_new_tokens=NEW_TOKENS, return_full_text=False, stop_sequence=stop)
    text = stopped[0]["generated_text"]
    assert stop in text and len(text) < len(unconstrained), f"{stop!r} should end {unconstrained!r} early"


def test_a_raw_prompt_in_the_chat_format_answers_like_the_chat(pipe, photo, chat_answer):
    """`images=` + `text=` applies no chat template (as docs/ecosystem.md says): the chat-format prompt is the user's."""
    prompt = pipe.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True,
    )
    raw = pipe(images=photo, text=prompt, max_new_tokens=NEW_TOKENS, return_full_text=False)[0]["generated_text"]
    assert raw.lstrip() == chat_answer.lstrip(), f"raw chat-format prompt gave {raw!r}, the chat {chat_answer!r}"
