"""VisionZephyrProcessor: the original's prompts and ids, `<image>` expansion agreeing with the model, prompts."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import AutoProcessor


REPO_ROOT = Path(__file__).resolve().parent.parent
PROMPT_CASES = json.loads((Path(__file__).parent / "fixtures" / "original" / "prompts.json").read_text())["cases"]
PROCESSOR_FILES = ["processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
IMAGE_TOKEN_ID = 32000
ORIGINAL_IMAGE_INDEX = -200
MARKER = "<image>\n"
BOX = {"type": "box", "xyxy": [100, 80, 400, 300], "color": "red"}


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    """The shipped processor, loaded with `trust_remote_code` from a folder outside the repository."""
    folder = tmp_path_factory.mktemp("downloaded-processor")
    for path in [*REPO_ROOT.glob("*.py"), *(REPO_ROOT / name for name in PROCESSOR_FILES)]:
        shutil.copy(path, folder / path.name)
    return AutoProcessor.from_pretrained(folder, trust_remote_code=True)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    y, x = np.mgrid[0:480, 0:640]
    return Image.fromarray(np.stack([x % 256, y % 256, (x * y) % 256], -1).astype(np.uint8))


@pytest.fixture(scope="module")
def shared_arithmetic(processor):
    """The module holding the token-count functions that the processor and the model share."""
    return sys.modules[type(processor.image_processor).__module__]


def expected_ids(case: dict, visual_tokens: int) -> list[int]:
    """The original's ids with its single `-200` expanded to the visual tokens."""
    ids = []
    for token in case["input_ids"]:
        ids.extend([IMAGE_TOKEN_ID] * visual_tokens if token == ORIGINAL_IMAGE_INDEX else [token])
    return ids


def as_content_blocks(messages: list[dict], image) -> list[dict]:
    """The fixture conversation written with chat content blocks instead of a literal `<image>\\n`."""
    converted = []
    for message in messages:
        text = message["content"]
        blocks = [{"type": "image", "image": image}] if text.startswith(MARKER) else []
        converted.append(
            {"role": message["role"], "content": [*blocks, {"type": "text", "text": text.removeprefix(MARKER)}]}
        )
    return converted


def user_turn(text: str, image=None, **image_fields) -> dict:
    """A user message with an optional image block (extra fields such as `visual_prompts` go on the block)."""
    image_blocks = [] if image is None else [{"type": "image", "image": image, **image_fields}]
    return {"role": "user", "content": [*image_blocks, {"type": "text", "text": text}]}


def image_token_counts(input_ids: torch.Tensor) -> list[int]:
    return (input_ids == IMAGE_TOKEN_ID).sum(dim=1).tolist()


def test_processor_loads_from_a_folder_outside_the_repository(processor):
    assert type(processor).__name__ == "VisionZephyrProcessor"
    assert type(processor.image_processor).__name__ == "VisionZephyrImageProcessor"
    assert (processor.num_query_tokens, processor.image_token, processor.image_token_id) == (32, "<image>", 32000)
    assert processor.image_processor.image_grid_pinpoints == [[672, 336], [336, 672], [1008, 336], [336, 1008]]


def test_save_pretrained_writes_auto_map_and_reloads(processor, photo, tmp_path):
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_vis_zephyr.VisionZephyrProcessor"
    assert config["image_processor"]["auto_map"]["AutoImageProcessor"] == (
        "image_processing_anyres.VisionZephyrImageProcessor"
    )
    reloaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    inputs = {"text": f"{MARKER}Hi", "images": photo, "return_tensors": "pt"}
    for key, value in processor(**inputs).items():
        assert torch.equal(value, reloaded(**inputs)[key]), f"{key} changed after save/reload"


@pytest.mark.parametrize("case", PROMPT_CASES, ids=lambda case: case["messages"][-1]["content"][:24])
def test_chat_template_renders_bos_then_the_original_prompt(processor, case):
    """The original added BOS when tokenizing; the template writes it, so engines that tokenize a rendered chat
    without special tokens (vLLM) get the same ids."""
    assert processor.apply_chat_template(case["messages"], add_generation_prompt=True) == "<s>" + case["prompt"]


@pytest.mark.parametrize("case", PROMPT_CASES, ids=lambda case: case["messages"][-1]["content"][:24])
def test_rendered_prompt_tokenized_with_or_without_special_tokens_gives_the_original_ids(processor, photo, case):
    images = [photo] if ORIGINAL_IMAGE_INDEX in case["input_ids"] else None
    rendered = processor.apply_chat_template(case["messages"], add_generation_prompt=True)
    expected = expected_ids(case, visual_tokens=96)
    assert processor(text=rendered, images=images).input_ids[0] == expected, "the processor added a second BOS"
    expanded = rendered.replace(MARKER, "<image>" * 96 + "\n")
    assert processor.tokenizer(expanded, add_special_tokens=False).input_ids == expected


@pytest.mark.parametrize("case", PROMPT_CASES, ids=lambda case: case["messages"][-1]["content"][:24])
def test_image_blocks_give_the_same_ids_as_the_original_marker(processor, photo, case):
    inputs = processor.apply_chat_template(
        as_content_blocks(case["messages"], photo),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert inputs.input_ids[0].tolist() == expected_ids(case, visual_tokens=96)


def test_system_message_replaces_the_default_system_prompt(processor):
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    assert processor.apply_chat_template(messages) == "<s><|system|>\nBe terse.</s><|user|>\nHi</s>"


def test_unknown_role_is_rejected(processor):
    with pytest.raises(Exception, match="'user' and 'assistant'"):
        processor.apply_chat_template([{"role": "tool", "content": "42"}])


def test_assistant_tokens_mask_covers_the_answer_and_its_eos(processor):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A cat."}]
    inputs = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    answer = [token for token, keep in zip(inputs.input_ids[0], inputs.assistant_masks[0], strict=True) if keep]
    assert processor.decode(answer) == "A cat.</s>"


def test_call_expands_every_image_of_a_left_padded_batch(processor, photo, shared_arithmetic):
    wide = photo.resize((1920, 804))
    inputs = processor(
        text=[f"{MARKER}What is this?", f"Compare {MARKER}and {MARKER}please."],
        images=[[photo], [wide, photo]],
        padding=True,
        return_tensors="pt",
    )
    assert inputs.image_grids.tolist() == [[1, 2], [1, 3], [1, 2]]
    expected = [shared_arithmetic.num_image_tokens(grid, 32) for grid in inputs.image_grids.tolist()]
    assert image_token_counts(inputs.input_ids) == [expected[0], expected[1] + expected[2]]
    assert inputs.attention_mask[0, 0] == 0 and inputs.input_ids[0, 0] == 2, "shorter prompt must be left-padded"


def test_max_tiles_per_call_shrinks_the_visual_tokens(processor, photo):
    wide = photo.resize((1920, 804))
    full = processor(text=MARKER, images=wide, return_tensors="pt")
    budget = processor(text=MARKER, images=wide, max_tiles=3, return_tensors="pt")
    assert image_token_counts(full.input_ids) == [128] and image_token_counts(budget.input_ids) == [96]
    assert budget.pixel_values.shape[1] == 3 and budget.image_grids.tolist() == [[1, 2]]


@pytest.mark.parametrize(
    ("text", "images", "message"),
    [
        (f"{MARKER}{MARKER}Two?", "one", "should be the same as the number of images"),
        ("No marker.", "one", "should be the same as the number of images"),
        (f"{MARKER}Where is it?", None, "no images were passed"),
    ],
)
def test_image_marker_and_image_counts_must_agree(processor, photo, text, images, message):
    with pytest.raises(ValueError, match=message):
        processor(text=text, images=None if images is None else [photo])


def test_truncation_that_would_cut_visual_tokens_raises(processor, photo):
    with pytest.raises(ValueError, match="Mismatch in `image` token count"):
        processor(text=f"Look: {MARKER}What is it?", images=photo, truncation=True, max_length=40)


def test_grayscale_array_counts_as_one_image(processor, photo):
    gray = np.asarray(photo.convert("L"))
    inputs = processor(text=MARKER, images=[gray], return_tensors="pt")
    assert image_token_counts(inputs.input_ids) == [96]


def test_visual_prompts_give_identical_pixels_on_all_three_paths_and_never_change_ids(processor, photo):
    plain = processor(text=f"{MARKER}Hi", images=photo, return_tensors="pt")
    called = processor(text=f"{MARKER}Hi", images=photo, visual_prompts=[[BOX]], return_tensors="pt")
    drawn = processor(text=f"{MARKER}Hi", images=processor.draw_visual_prompts(photo, [BOX]), return_tensors="pt")
    chat = processor.apply_chat_template(
        [user_turn("Hi", photo, visual_prompts=[BOX])], tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert torch.equal(called.pixel_values, drawn.pixel_values), "visual_prompts= differs from draw_visual_prompts"
    assert torch.equal(chat.pixel_values, drawn.pixel_values), "chat image block differs from draw_visual_prompts"
    assert not torch.equal(plain.pixel_values, drawn.pixel_values), "the prompt changed no pixel"
    for inputs in (called, drawn):
        assert torch.equal(inputs.input_ids, plain.input_ids), "visual prompts changed the token ids"


def test_visual_prompts_follow_their_images_in_a_chat_batch(processor, photo):
    other = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    conversations = [[user_turn("A", photo)], [user_turn("B", other, visual_prompts=[BOX])]]
    chat = processor.apply_chat_template(conversations, tokenize=True, return_dict=True, return_tensors="pt")
    expected = processor.image_processor([photo, other], visual_prompts=[None, [BOX]], return_tensors="pt")
    assert torch.equal(chat.pixel_values, expected.pixel_values)


def test_invalid_visual_prompt_is_reported(processor, photo):
    with pytest.raises((TypeError, ValueError), match="type"):
        processor(text=MARKER, images=photo, visual_prompts=[[{"type": "hexagon"}]])


def test_post_process_decodes_the_generated_text_without_special_tokens(processor):
    generated = processor.tokenizer(["A cat.</s>", "Two dogs.</s>"], padding=True, return_tensors="pt").input_ids
    assert processor.post_process_image_text_to_text(generated) == ["A cat.", "Two dogs."]


def test_num_multimodal_tokens_agree_with_a_processor_call(processor, photo):
    sizes = [(480, 640), (804, 1920), (1000, 300)]
    data = processor._get_num_multimodal_tokens(image_sizes=sizes)
    images = [photo.resize((width, height)) for height, width in sizes]
    inputs = processor(text=[MARKER] * 3, images=images, padding=True, return_tensors="pt")
    assert data.num_image_tokens == image_token_counts(inputs.input_ids)
    # With `num_image_patches`, vLLM would concatenate the tiles of different images on one axis.
    assert getattr(data, "num_image_patches", None) is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(1, 1600),
    height=st.integers(1, 1600),
    max_tiles=st.sampled_from([None, 3, 4]),
    question=st.text(alphabet="ab <>|\n", max_size=20),
)
@example(width=1, height=673, max_tiles=3, question="")  # a side that floors to 0 px on the canvas
def test_visual_token_count_is_the_same_for_processor_and_model(
    processor, tiny_model, shared_arithmetic, width, height, max_tiles, question
):
    image = Image.new("RGB", (width, height), (120, 30, 200))
    inputs = processor(text=f"{MARKER}{question}", images=image, max_tiles=max_tiles, return_tensors="pt")
    grid = tuple(inputs.image_grids[0].tolist())
    model = tiny_model.model
    model_grid = model.image_grid_shapes(inputs.image_sizes, None)[0] if max_tiles is None else grid
    assert inputs.pixel_values.shape[1] == shared_arithmetic.num_tiles_from_grid(grid)
    assert (
        image_token_counts(inputs.input_ids)
        == [
            shared_arithmetic.num_image_tokens(grid, processor.num_query_tokens),
        ]
        == [shared_arithmetic.num_image_tokens(model_grid, model.visual_tokens_per_tile)]
    )


def test_tiny_model_features_fill_exactly_the_processor_placeholders(processor, tiny_model, photo):
    inputs = processor(
        text=[f"{MARKER}Hi", f"{MARKER}Hello there"],
        images=[photo, photo.resize((1920, 804))],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        features = tiny_model.model.get_image_features(
            inputs.pixel_values,
            image_grids=inputs.image_grids,
            qformer_input_ids=inputs.qformer_input_ids,
            qformer_attention_mask=inputs.qformer_attention_mask,
        )
    assert [len(image) for image in features.pooler_output] == image_token_counts(inputs.input_ids)


def test_qformer_inputs_hold_each_images_sample_text_without_image_tokens_or_padding(processor, photo):
    inputs = processor(
        text=[f"{MARKER}Hi", f"{MARKER}{MARKER}Hello there"],
        images=[photo, photo, photo.resize((1920, 804))],
        padding=True,
        return_tensors="pt",
    )
    samples = [
        ids[mask.bool() & (ids != IMAGE_TOKEN_ID)].tolist()
        for ids, mask in zip(inputs.input_ids, inputs.attention_mask, strict=True)
    ]
    rows = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(inputs.qformer_input_ids, inputs.qformer_attention_mask, strict=True)
    ]
    assert rows == [samples[0], samples[1], samples[1]], "one row per image, holding its own sample's text"
    assert samples[0][0] == 1 and len(samples[1]) > len(samples[0])
    assert inputs.qformer_attention_mask[0].tolist()[len(samples[0]) :] == [0] * (len(samples[1]) - len(samples[0]))


def test_engine_call_with_qformer_text_gives_the_qformer_inputs_of_the_full_prompt(processor, photo):
    """vLLM calls the processor with placeholder text only; the prompt reaches the Q-Former through `qformer_text`."""
    conversation = [user_turn("What is in the red box?", photo)]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    full = processor(text=prompt, images=photo, return_tensors="pt")
    engine = processor(text="<image>", images=photo, qformer_text=prompt, return_tensors="pt")
    assert torch.equal(engine.qformer_input_ids, full.qformer_input_ids)
    assert torch.equal(engine.qformer_attention_mask, full.qformer_attention_mask)
    assert torch.equal(engine.pixel_values, full.pixel_values)


def test_qformer_text_must_give_one_prompt_per_sample(processor, photo):
    with pytest.raises(ValueError, match="qformer_text: expected one prompt per text sample"):
        processor(text="<image>", images=photo, qformer_text=["a", "b"])
