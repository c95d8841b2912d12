"""Bad and odd inputs: every rejection is a ValueError/TypeError naming the argument; odd-but-valid inputs work.

Cases already covered elsewhere are not repeated: image-processor rejections of arrays, kwargs and budgets
(`test_image_processing.py`), `<image>` marker/image count mismatches and truncation that cuts visual tokens
(`test_processor.py`), malformed visual prompts (`test_visual_prompts.py`), placeholder/feature mismatches and
malformed `pixel_values` (`test_modeling.py`).
"""

import io
import struct
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from conftest import image_inputs, prompt_ids
from PIL import Image, ImageOps
from transformers import AutoProcessor


MARKER = "<image>\n"
QUESTION = f"{MARKER}What is in the picture?"
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def processor(tiny_checkpoint):
    return AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)


@pytest.fixture(scope="module")
def num_image_tokens(processor):
    """The token-count function that the processor and the model share."""
    return sys.modules[type(processor.image_processor).__module__].num_image_tokens


def striped_image(width: int, height: int) -> Image.Image:
    """Left half white, right half black: any rotation or flip moves the white half."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = 255
    return Image.fromarray(pixels)


def noise_image(width: int, height: int) -> Image.Image:
    """Incompressible pixels, so that a PNG of it is big enough to cut in half."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


def truncated_png() -> bytes:
    data = png_bytes(noise_image(64, 64))
    return data[: len(data) // 2]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming_size(width: int, height: int) -> bytes:
    """A few dozen bytes whose header claims a `width` x `height` RGB image: a decompression bomb's calling card."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def visual_token_count(inputs) -> int:
    return int((torch.as_tensor(inputs["input_ids"]) == 32000).sum())


# Images that must be rejected


@pytest.mark.parametrize(
    ("make_images", "error", "message"),
    [
        pytest.param(lambda tmp: Image.new("RGB", (0, 0)), ValueError, r"images: got an empty image", id="0x0"),
        pytest.param(lambda tmp: None, ValueError, r"no images were passed", id="None"),
        pytest.param(lambda tmp: [None], TypeError, r"images: expected a PIL image.*got NoneType", id="[None]"),
        pytest.param(lambda tmp: b"\x89PNG", TypeError, r"images: expected a PIL image.*got bytes", id="bytes"),
        pytest.param(
            lambda tmp: str(tmp / "missing.png"),
            ValueError,
            r"images: cannot read an image from '.*missing\.png'; expected an existing image file",
            id="missing path",
        ),
        pytest.param(
            lambda tmp: write(tmp / "half.png", truncated_png()),
            ValueError,
            r"images: cannot read an image from '.*half\.png'",
            id="truncated file",
        ),
        pytest.param(
            lambda tmp: write(tmp / "notes.png", b"this is not an image"),
            ValueError,
            r"images: cannot read an image from '.*notes\.png'",
            id="not an image file",
        ),
        pytest.param(
            lambda tmp: write(tmp / "bomb.png", png_claiming_size(100_000, 100_000)),
            ValueError,
            r"images: '.*bomb\.png' is too large to decode safely.*MAX_IMAGE_PIXELS",
            id="decompression bomb header",
        ),
        pytest.param(
            lambda tmp: torch.full((3, 32, 32), float("nan")),
            ValueError,
            r"images: float images must hold values in \[0, 1\]",
            id="NaN tensor",
        ),
        pytest.param(
            lambda tmp: np.full((32, 32, 3), np.inf, dtype=np.float32),
            ValueError,
            r"images: float images must hold values in \[0, 1\]",
            id="inf array",
        ),
    ],
)
def test_bad_image_is_rejected_naming_the_argument(processor, tmp_path, make_images, error, message):
    with pytest.raises(error, match=message):
        processor(text=QUESTION, images=make_images(tmp_path))


def test_truncated_image_opened_by_the_caller_is_a_value_error(processor, tmp_path):
    truncated = Image.open(io.BytesIO(truncated_png()))
    with pytest.raises(ValueError, match="images: cannot decode the image.*truncated or corrupt"):
        processor(text=QUESTION, images=truncated)


def test_file_over_the_decompression_bomb_limit_is_rejected_before_decoding(processor, tmp_path, monkeypatch):
    path = write(tmp_path / "big.png", png_bytes(striped_image(64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)  # over the limit, under PIL's own 2x error
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ValueError, match="too large to decode"):
        processor(text=QUESTION, images=path)


# Odd images that must work


@pytest.mark.parametrize("size", [(1, 1), (10000, 3), (3, 10000), (2, 1)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_tiny_and_extremely_thin_images_give_the_shared_token_count(processor, num_image_tokens, size):
    inputs = processor(text=QUESTION, images=Image.new("RGB", size, (200, 10, 90)), return_tensors="pt")
    grid = tuple(inputs.image_grids[0].tolist())
    assert visual_token_count(inputs) == num_image_tokens(grid, processor.num_query_tokens)
    assert inputs.image_sizes.tolist() == [[size[1], size[0]]]
    assert torch.isfinite(inputs.pixel_values).all()


def test_transparent_pixels_keep_their_colour_and_lose_their_alpha(processor):
    transparent = Image.new("RGBA", (64, 48), (10, 20, 30, 0))
    opaque = Image.new("RGB", (64, 48), (10, 20, 30))
    assert torch.equal(
        processor.image_processor(transparent, return_tensors="pt").pixel_values,
        processor.image_processor(opaque, return_tensors="pt").pixel_values,
    ), "RGBA is converted like PIL's convert('RGB'): alpha dropped, not composited on a background"


def test_16_bit_png_file_is_scaled_to_8_bits_not_clipped(processor, tmp_path):
    levels = np.linspace(0, 65535, 64 * 48).astype(np.uint16).reshape(48, 64)
    path = tmp_path / "depth.png"
    Image.fromarray(levels).save(path)
    expected = Image.fromarray((levels >> 8).astype(np.uint8)).convert("RGB")
    assert torch.equal(
        processor.image_processor(str(path), return_tensors="pt").pixel_values,
        processor.image_processor(expected, return_tensors="pt").pixel_values,
    ), "a 16-bit file must give the same tiles as its 8-bit version (PIL's convert('RGB') would clip it to white)"


@pytest.fixture
def rotated_jpeg(tmp_path) -> str:
    """A 40x20 JPEG (as stored) whose EXIF says: rotate 90 degrees clockwise to display (orientation 6)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = tmp_path / "phone.jpg"
    striped_image(40, 20).save(path, exif=exif, quality=95)
    return str(path)


def test_image_path_is_read_upright_by_its_exif_orientation(processor, rotated_jpeg):
    inputs = processor(text=QUESTION, images=rotated_jpeg, return_tensors="pt")
    upright = ImageOps.exif_transpose(Image.open(rotated_jpeg))
    assert upright.size == (20, 40)
    assert inputs.image_sizes.tolist() == [[40, 20]], "the image must be 20 wide and 40 high once upright"
    expected = processor(text=QUESTION, images=upright, return_tensors="pt")
    assert torch.equal(inputs.pixel_values, expected.pixel_values)


def test_chat_image_path_is_read_upright_too(processor, rotated_jpeg):
    conversation = [
        {"role": "user", "content": [{"type": "image", "path": rotated_jpeg}, {"type": "text", "text": "?"}]}
    ]
    inputs = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt")
    assert inputs.image_sizes.tolist() == [[40, 20]]


def test_pil_image_opened_by_the_caller_is_used_as_stored(processor, rotated_jpeg):
    # Documented: the caller's pixels (and their visual-prompt coordinates) are taken as they are.
    inputs = processor(text=QUESTION, images=Image.open(rotated_jpeg), return_tensors="pt")
    assert inputs.image_sizes.tolist() == [[20, 40]]


# Visual prompts (malformed ones: test_visual_prompts.py)


@pytest.mark.parametrize(
    "visual_prompts",
    ["box", 5, [5], [[5]], {"type": "box", "xyxy": [1, 1, 2, 2]}, ([{"type": "box", "xyxy": [1, 1, 2, 2]}],)],
    ids=["str", "int", "list of int", "list of list of int", "bare dict", "tuple"],
)
def test_visual_prompts_of_the_wrong_layout_are_a_type_error_naming_the_argument(processor, visual_prompts):
    with pytest.raises(TypeError, match=r"visual_prompts: expected a list with one list of prompt dicts"):
        processor(text=QUESTION, images=Image.new("RGB", (64, 48)), visual_prompts=visual_prompts)


@pytest.mark.parametrize(
    "prompt",
    [
        {"type": "scribble", "points": [[1, 1], [40, 40], [3, 30]], "width": 2**40},
        {"type": "arrow", "xyxy": [1, 1, 40, 40], "width": 2**31},
        {"type": "triangle", "points": [[1, 1], [40, 40], [3, 30]], "width": 2**31},
        {"type": "point", "xy": [5, 5], "radius": 10**7},
        {"type": "mask_contour", "mask": np.ones((48, 64), dtype=bool), "width": 2**40},
    ],
    ids=lambda prompt: prompt["type"],
)
def test_absurdly_wide_strokes_are_capped_to_the_image_and_drawn_quickly(processor, prompt):
    image = Image.new("RGB", (64, 48))
    started = time.perf_counter()
    drawn = processor.draw_visual_prompts(image, [prompt])
    elapsed = time.perf_counter() - started
    assert drawn.size == image.size
    assert elapsed < 5, f"drawing took {elapsed:.1f} s (PIL spent ~1 min on a radius of 10**7 before the cap)"


def test_stroke_width_and_radius_are_capped_at_twice_the_image_half_perimeter(processor):
    validate = sys.modules[type(processor).__module__.rsplit(".", 1)[0] + ".visual_prompts"].validate_visual_prompts
    prompts = [{"type": "point", "xy": [1, 1], "radius": 10**7}, {"type": "box", "xyxy": [0, 0, 5, 5], "width": 30}]
    assert [prompt.get("radius", prompt.get("width")) for prompt in validate(prompts, (64, 48))] == [224, 30]


# Text


def test_empty_text_with_an_image_is_a_marker_count_error(processor):
    with pytest.raises(ValueError, match="Found total 0 <image> tokens and 1 images"):
        processor(text="", images=Image.new("RGB", (32, 32)))


def test_empty_text_without_images_is_just_the_bos_token(processor):
    assert processor(text="").input_ids == [[processor.tokenizer.bos_token_id]]


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        pytest.param([], ValueError, "text: got an empty list", id="empty list"),
        pytest.param(5, TypeError, "text: expected a str or a list of str, got 5", id="int"),
        pytest.param(["ok", None], TypeError, "text: expected a str or a list of str", id="None in list"),
    ],
)
def test_bad_text_is_rejected_naming_the_argument(processor, text, error, message):
    with pytest.raises(error, match=message):
        processor(text=text)


# Conversations


def chat(*messages) -> list[dict]:
    return list(messages)


USER = {"role": "user", "content": "Hi"}


@pytest.mark.parametrize(
    ("conversation", "error", "message"),
    [
        pytest.param(
            chat({"role": "tool", "content": "42"}),
            ValueError,
            r"conversation\[0\]\['role'\]: expected 'user' and 'assistant' turns.*got 'tool'",
            id="unknown role",
        ),
        pytest.param(
            chat(USER, {"role": "system", "content": "late"}),
            ValueError,
            r"conversation\[1\]\['role'\].*optional first 'system' message, got 'system'",
            id="system not first",
        ),
        pytest.param(chat({"content": "Hi"}), ValueError, r"conversation\[0\]\['role'\].*got None", id="no role"),
        pytest.param(chat("Hi"), TypeError, r"conversation\[0\]: expected a dict", id="message not a dict"),
        pytest.param(
            chat({"role": "user", "content": [{"type": "video", "path": "clip.mp4"}]}),
            ValueError,
            r"conversation\[0\]\['content'\]\[0\]: expected a \{'type': 'text'.*got \{'type': 'video'",
            id="video block",
        ),
        pytest.param(
            chat({"role": "user", "content": [{"text": "Hi"}]}),
            ValueError,
            r"conversation\[0\]\['content'\]\[0\]: expected a \{'type': 'text'",
            id="block without type",
        ),
        pytest.param(
            chat({"role": "user", "content": [{"type": "text", "text": 42}]}),
            TypeError,
            r"conversation\[0\]\['content'\]\[0\]\['text'\]: expected a str, got 42",
            id="text block without text",
        ),
        pytest.param(
            chat({"role": "user", "content": None}),
            TypeError,
            r"conversation\[0\]\['content'\]: expected a str or a list of content blocks",
            id="content None",
        ),
        pytest.param([], TypeError, r"conversation: expected a non-empty list of messages", id="empty"),
    ],
)
def test_bad_conversation_is_rejected_naming_the_message(processor, conversation, error, message):
    with pytest.raises(error, match=message):
        processor.apply_chat_template(conversation, add_generation_prompt=True)


def test_image_block_without_a_source_takes_the_images_argument(processor):
    # How training code passes images: blocks mark the place, `processor_kwargs` carries the pixels.
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
    inputs = processor.apply_chat_template(
        conversation, tokenize=True, return_dict=True, processor_kwargs={"images": [Image.new("RGB", (32, 32))]}
    )
    assert visual_token_count(inputs) == 96


def test_batch_of_conversations_is_checked_chat_by_chat(processor):
    with pytest.raises(ValueError, match=r"conversation\[0\]\['role'\].*got 'bot'"):
        processor.apply_chat_template([[USER], [{"role": "bot", "content": "Hi"}]])


# The model


def test_image_prompt_without_pixel_values_is_rejected_by_generate(tiny_model):
    input_ids = torch.tensor([prompt_ids(5, 96)])
    with pytest.raises(ValueError, match="`input_ids` hold 96 `<image>` placeholder tokens but no `pixel_values`"):
        tiny_model.generate(input_ids=input_ids, max_new_tokens=2, do_sample=False, pad_token_id=2)


def test_image_prompt_with_an_empty_pixel_batch_is_rejected_by_forward(tiny_model):
    input_ids = torch.tensor([prompt_ids(5, 96)])
    with torch.no_grad(), pytest.raises(ValueError, match="no `pixel_values` were given"):
        tiny_model(input_ids=input_ids, pixel_values=torch.zeros(0, 3, 3, 336, 336))


def test_generated_image_token_after_the_prompt_is_not_an_error(tiny_model):
    # Decoding steps carry no pixels; an `<image>` id the model itself produced must not stop generation.
    with torch.no_grad():
        output = tiny_model(input_ids=torch.tensor([prompt_ids(5, 0)]), use_cache=True)
        step = tiny_model(input_ids=torch.tensor([[32000]]), past_key_values=output.past_key_values)
    assert torch.isfinite(step.logits).all()


def test_prompt_one_token_over_the_context_is_rejected_not_run(tiny_model, monkeypatch):
    # BOS + 97 text tokens + 96 visual tokens = 194 tokens against a context of 193.
    monkeypatch.setattr(tiny_model.config.text_config, "max_position_embeddings", 193)
    batch = {"input_ids": torch.tensor([prompt_ids(97, 96)]), **image_inputs([(1, 2)])}
    with torch.no_grad(), pytest.raises(ValueError, match=r"prompt is 194 tokens .* `max_position_embeddings=193`"):
        tiny_model(**batch)


def test_prompt_filling_the_context_exactly_runs(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model.config.text_config, "max_position_embeddings", 40)
    with torch.no_grad():
        assert tiny_model(input_ids=torch.tensor([prompt_ids(39, 0)])).logits.shape[1] == 40


def test_requests_packed_in_one_row_are_checked_by_their_positions(tiny_model, monkeypatch):
    # vLLM packs requests into one row: two 30-token prompts make a row of 60 against a context of 40.
    monkeypatch.setattr(tiny_model.config.text_config, "max_position_embeddings", 40)
    input_ids = torch.tensor([prompt_ids(29, 0) * 2])
    packed = torch.arange(30).repeat(2)[None]
    with torch.no_grad():
        assert tiny_model(input_ids=input_ids, position_ids=packed).logits.shape[1] == 60
        with pytest.raises(ValueError, match=r"prompt is 60 tokens .* `max_position_embeddings=40`"):
            tiny_model(input_ids=input_ids, position_ids=torch.arange(60)[None])


def test_processor_prompt_over_the_context_is_rejected_by_the_model(processor, tiny_model):
    long_question = QUESTION + " and" * 4096
    inputs = processor(text=long_question, images=Image.new("RGB", (64, 64)), return_tensors="pt")
    assert visual_token_count(inputs) == 96, "the processor must not drop visual tokens of a long prompt"
    with torch.no_grad(), pytest.raises(ValueError, match="max_position_embeddings=4096"):
        tiny_model(**inputs)
