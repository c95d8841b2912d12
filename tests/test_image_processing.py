"""VisionZephyrImageProcessor: the original's anyres tiles exactly, every input kind, budgets, clear errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor
from transformers.dynamic_module_utils import get_class_from_dynamic_module


REPO_ROOT = Path(__file__).resolve().parent.parent
ORIGINAL = Path(__file__).resolve().parent / "fixtures" / "original"
ANYRES_CASES = json.loads((ORIGINAL / "anyres.json").read_text())["images"]
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def fixture_image(width: int, height: int) -> Image.Image:
    """The image the original fixtures were made from (fixtures/original/README.md)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    r = (x * 7 + y * 3) % 256
    g = ((x // 8) * (y // 8) * 13) % 256
    b = (((x ^ y) & 0xFF) * 5 + (x * x + y * y) // 97) % 256
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8), "RGB")


def original_pixel_values(case: dict) -> np.ndarray:
    """The fixture tiles normalised like the original's CLIP image processor (float64 rescale, float32 normalise)."""
    tiles = [
        np.asarray(Image.open(ORIGINAL / case["dir"] / f"tile_{i}.png").convert("RGB")) for i in range(case["tiles"])
    ]
    rescaled = (np.stack(tiles).astype(np.float64) / 255).astype(np.float32)
    return ((rescaled - CLIP_MEAN) / CLIP_STD).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def image_processor():
    processor_class = get_class_from_dynamic_module(
        "image_processing_anyres.VisionZephyrImageProcessor", str(REPO_ROOT)
    )
    return processor_class()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return fixture_image(640, 480)


@pytest.mark.parametrize("case", ANYRES_CASES, ids=lambda case: f"{case['width']}x{case['height']}")
def test_tiles_equal_the_original_preprocessing(image_processor, case):
    output = image_processor(fixture_image(case["width"], case["height"]), return_tensors="pt")
    expected = original_pixel_values(case)
    assert tuple(output.pixel_values.shape) == (1, *expected.shape), "tile count or tile shape differs"
    max_diff = np.abs(output.pixel_values[0].numpy() - expected).max()
    assert max_diff <= 1e-6, f"max |diff| {max_diff} in normalised units against the original's tiles"


@pytest.mark.parametrize("case", ANYRES_CASES, ids=lambda case: f"{case['width']}x{case['height']}")
def test_grid_is_the_original_best_fit_canvas(image_processor, case):
    output = image_processor(fixture_image(case["width"], case["height"]))
    canvas_width, canvas_height = case["best_resolution_wh"]
    assert output.image_grids.tolist() == [[canvas_height // 336, canvas_width // 336]]
    assert output.image_sizes.tolist() == [[case["height"], case["width"]]], "image_sizes must be (height, width)"


def test_mixed_sizes_batch_is_zero_padded_on_the_tile_axis(image_processor):
    output = image_processor([fixture_image(640, 480), fixture_image(1920, 804)], return_tensors="pt")
    assert tuple(output.pixel_values.shape) == (2, 4, 3, 336, 336)
    assert output.pixel_values.dtype == torch.float32
    assert output.image_sizes.dtype == output.image_grids.dtype == torch.int64
    assert output.image_grids.tolist() == [[1, 2], [1, 3]]
    assert not output.pixel_values[0, 3].any(), "the 3-tile image's 4th tile must be zero padding"
    alone = image_processor(fixture_image(640, 480), return_tensors="pt").pixel_values[0]
    assert torch.equal(output.pixel_values[0, :3], alone), "batching changed an image's tiles"


def test_returns_numpy_without_return_tensors(image_processor, photo):
    output = image_processor(photo)
    assert isinstance(output.pixel_values, np.ndarray) and output.pixel_values.shape == (1, 3, 3, 336, 336)


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda image: np.asarray(image), id="numpy HWC uint8"),
        pytest.param(lambda image: np.asarray(image).transpose(2, 0, 1).copy(), id="numpy CHW uint8"),
        pytest.param(lambda image: torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()), id="torch CHW"),
        pytest.param(lambda image: torch.from_numpy(np.asarray(image).copy()), id="torch HWC"),
        pytest.param(lambda image: np.asarray(image) / 255.0, id="numpy float in [0, 1]"),
        pytest.param(lambda image: np.asarray(image).astype(np.uint16) * 257, id="numpy uint16"),
        pytest.param(lambda image: image.convert("RGBA"), id="PIL RGBA"),
        pytest.param(lambda image: torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None], id="4-D batch"),
    ],
)
def test_every_input_kind_gives_the_same_tiles_as_the_rgb_image(image_processor, photo, convert):
    expected = image_processor(photo).pixel_values
    assert np.array_equal(image_processor(convert(photo)).pixel_values, expected)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "LA", "1"])
def test_other_pil_modes_are_converted_like_pil_convert_rgb(image_processor, photo, mode):
    image = photo.convert(mode)
    expected = image_processor(image.convert("RGB")).pixel_values
    assert np.array_equal(image_processor(image).pixel_values, expected)


def test_grayscale_array_is_replicated_to_three_channels(image_processor, photo):
    gray = photo.convert("L")
    expected = image_processor(gray.convert("RGB")).pixel_values
    assert np.array_equal(image_processor(np.asarray(gray)).pixel_values, expected)


def test_16_bit_images_are_scaled_to_8_bits_not_clipped(image_processor):
    levels = np.linspace(0, 65535, 336 * 336).astype(np.uint16).reshape(336, 336)
    eight_bit = Image.fromarray((levels >> 8).astype(np.uint8)).convert("RGB")
    expected = image_processor(eight_bit).pixel_values
    assert np.array_equal(image_processor(Image.fromarray(levels)).pixel_values, expected), "PIL I;16"
    assert np.array_equal(image_processor(levels).pixel_values, expected), "numpy uint16"


def test_a_side_that_floors_to_zero_keeps_one_pixel_where_the_original_crashed(image_processor):
    output = image_processor(Image.new("RGB", (1, 2000), (255, 255, 255)), return_tensors="pt")
    grid_tiles = output.pixel_values[0, 1:]
    black = grid_tiles[0, :, :1, :1]  # the canvas corner is padding
    assert output.image_grids.tolist() == [[2, 1]]
    painted_columns = (grid_tiles != black).any(dim=1).all(dim=1).sum(dim=1).tolist()
    assert painted_columns == [1, 1], f"expected the image as one 1-px column per tile, got {painted_columns}"


def test_max_tiles_restricts_the_grid(image_processor):
    wide = fixture_image(1920, 804)
    assert image_processor(wide).image_grids.tolist() == [[1, 3]]
    output = image_processor(wide, max_tiles=3)
    assert output.image_grids.tolist() == [[1, 2]] and output.pixel_values.shape[1] == 3


def test_grid_pinpoints_can_be_given_per_call(image_processor, photo):
    output = image_processor(photo, image_grid_pinpoints=[[336, 336]])
    assert output.image_grids.tolist() == [[1, 1]] and output.pixel_values.shape[1] == 2
    assert image_processor(photo).image_grids.tolist() == [[1, 2]], "a per-call budget must not stick"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tiles": 2}, "max_tiles=2 leaves no grid"),
        ({"max_tiles": 0}, "max_tiles: expected a positive int"),
        ({"image_grid_pinpoints": [[300, 672]]}, "multiples of tile_size=336"),
        ({"image_grid_pinpoints": []}, "image_grid_pinpoints: expected a non-empty list"),
        ({"tile_size": 0}, "tile_size: expected a positive int"),
        ({"size": {"height": 224, "width": 224}}, "`size` is not used"),
        ({"do_center_crop": True}, "`do_center_crop` is not used"),
    ],
)
def test_invalid_budget_or_geometry_is_a_value_error_naming_the_argument(image_processor, photo, kwargs, message):
    with pytest.raises(ValueError, match=message):
        image_processor(photo, **kwargs)


def test_wrongly_typed_kwarg_is_rejected(image_processor, photo):
    with pytest.raises(Exception, match="max_tiles"):
        image_processor(photo, max_tiles="3")


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (42, TypeError, "images: expected a PIL image"),
        ([], ValueError, "images: got no image"),
        (Image.new("RGB", (0, 5)), ValueError, "empty image"),
        (np.zeros((0, 5, 3), np.uint8), ValueError, "empty image"),
        (np.zeros((8, 8, 2), np.uint8), ValueError, "1, 3 or 4 channels"),
        (np.zeros((2, 2, 2, 2, 2), np.uint8), ValueError, r"shape \(H, W\)"),
        (np.full((8, 8, 3), 2.0), ValueError, r"values in \[0, 1\]"),
        (np.full((8, 8, 3), 300, np.int64), ValueError, "expected uint8"),
    ],
)
def test_bad_images_raise_naming_the_argument(image_processor, images, error, message):
    with pytest.raises(error, match=message):
        image_processor(images)


def test_fast_resize_is_opt_in_and_close_to_lanczos(image_processor):
    y, x = np.mgrid[0:1080, 0:1920] / 40.0
    smooth = Image.fromarray((127.5 + 120 * np.stack([np.sin(x), np.cos(y), np.sin(x + y)], -1)).astype(np.uint8))
    faithful = image_processor(smooth).pixel_values
    fast = image_processor(smooth, fast_resize=True).pixel_values
    assert not image_processor.fast_resize, "fast_resize must be off by default"
    assert fast.shape == faithful.shape and not np.array_equal(fast, faithful)
    max_levels = np.abs(fast - faithful).max() * CLIP_STD.max() * 255
    assert max_levels <= 4, f"fast resize differs by {max_levels:.1f} levels of 255 from LANCZOS on a smooth image"


def test_visual_prompts_are_drawn_before_tiling(image_processor, photo):
    draw_visual_prompts = get_class_from_dynamic_module("visual_prompts.draw_visual_prompts", str(REPO_ROOT))
    prompts = [{"type": "box", "xyxy": [100, 80, 400, 300], "color": "red"}]
    drawn = image_processor(draw_visual_prompts(photo, prompts)).pixel_values
    assert np.array_equal(image_processor(photo, visual_prompts=[prompts]).pixel_values, drawn)
    assert np.array_equal(image_processor(photo, visual_prompts=prompts).pixel_values, drawn), "single image form"
    assert not np.array_equal(image_processor(photo).pixel_values, drawn), "the prompt changed no pixel"


def test_visual_prompts_need_one_entry_per_image(image_processor, photo):
    with pytest.raises(ValueError, match="visual_prompts: got 1 entries for 2 images"):
        image_processor([photo, photo], visual_prompts=[None])


def test_save_and_reload_with_auto_image_processor_keeps_the_settings(image_processor, tmp_path):
    for name in ["image_processing_anyres.py", "visual_prompts.py"]:
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    image_processor.save_pretrained(tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(reloaded).__name__ == "VisionZephyrImageProcessor"
    assert reloaded.image_grid_pinpoints == [[672, 336], [336, 672], [1008, 336], [336, 1008]]
    assert (reloaded.tile_size, reloaded.resample, reloaded.fast_resize) == (336, Image.Resampling.LANCZOS, False)
