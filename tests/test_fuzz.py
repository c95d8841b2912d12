"""Fuzzing the processor and visual prompts: random sizes, modes, input kinds and prompt specs keep the invariants.

Invariants: `<image>` tokens per sample == `num_image_tokens(grid)` summed over its images == what the model's own
arithmetic gives (the tiny model's real feature count is checked in test_processor.py); `pixel_values` shape, dtype,
finiteness and zero tile padding; and no exception other than the documented `ValueError`/`TypeError`.
"""

import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import AutoProcessor


IMAGE_TOKEN_ID = 32000
MODES = ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1", "F"]
INPUT_KINDS = ["pil", "numpy", "torch"]
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def processor(tiny_checkpoint):
    return AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)


@pytest.fixture(scope="module")
def anyres(processor):
    """The module with the token-count arithmetic shared by the processor and the model."""
    return sys.modules[type(processor.image_processor).__module__]


@pytest.fixture(scope="module")
def visual_prompts(processor):
    return sys.modules[type(processor).__module__.rsplit(".", 1)[0] + ".visual_prompts"]


def make_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    """A smooth random gradient in `mode` (16-bit and float modes from arrays, the rest converted from RGB)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramp = (x * rng.uniform(0, 3) + y * rng.uniform(0, 3)) % 256
    if mode == "I;16":
        return Image.fromarray((ramp * 257).astype(np.uint16))
    if mode == "F":
        return Image.fromarray(ramp.astype(np.float32))
    rgb = np.stack([ramp, 255 - ramp, (ramp * 2) % 256], -1).astype(np.uint8)
    return Image.fromarray(rgb).convert(mode)


def as_input_kind(image: Image.Image, kind: str):
    if kind == "numpy":
        return np.asarray(image.convert("RGB"))
    if kind == "torch":
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    return image


image_specs = st.fixed_dictionaries(
    {
        "width": st.integers(1, 1200),
        "height": st.integers(1, 1200),
        "mode": st.sampled_from(MODES),
        "kind": st.sampled_from(INPUT_KINDS),
        "seed": st.integers(0, 2**16),
        "boxed": st.booleans(),
    }
)


def box_inside(spec: dict) -> list[dict]:
    width, height = spec["width"], spec["height"]
    return [{"type": "box", "xyxy": [0, 0, width // 2, height // 2], "color": "red", "label": "1"}]


@FUZZ
@given(
    # One or two texts of zero to two images each, at least one image in the batch.
    samples=st.lists(st.lists(image_specs, max_size=2), min_size=1, max_size=2).filter(any),
    max_tiles=st.sampled_from([None, 3, 4, 7]),
)
@example(
    samples=[[{"width": 1, "height": 1200, "mode": "I;16", "kind": "pil", "seed": 0, "boxed": True}]], max_tiles=3
)
def test_processor_output_keeps_its_invariants(processor, anyres, tiny_model, samples, max_tiles):
    specs = [spec for sample in samples for spec in sample]
    images = [as_input_kind(make_image(s["mode"], s["width"], s["height"], s["seed"]), s["kind"]) for s in specs]
    prompts = [box_inside(spec) if spec["boxed"] else None for spec in specs]
    texts = ["<image>\n" * len(sample) + "Describe." for sample in samples]
    inputs = processor(
        text=texts, images=images, visual_prompts=prompts, max_tiles=max_tiles, padding=True, return_tensors="pt"
    )

    grids = [tuple(grid) for grid in inputs.image_grids.tolist()]
    tiles = [anyres.num_tiles_from_grid(grid) for grid in grids]
    assert inputs.image_sizes.tolist() == [[spec["height"], spec["width"]] for spec in specs]
    assert tuple(inputs.pixel_values.shape) == (len(specs), max(tiles), 3, 336, 336)
    assert inputs.pixel_values.dtype == torch.float32 and torch.isfinite(inputs.pixel_values).all()
    for index, count in enumerate(tiles):
        assert not inputs.pixel_values[index, count:].any(), f"image {index}: tiles past its {count} are not zero"
    if max_tiles is not None:
        assert max(tiles) <= max_tiles, f"max_tiles={max_tiles} but grids {grids}"

    model = tiny_model.model
    model_grids = model.image_grid_shapes(None, inputs.image_grids)
    if max_tiles is None:  # the model derives the same grids from the image sizes alone
        assert model.image_grid_shapes(inputs.image_sizes, None) == grids
    per_image = [anyres.num_image_tokens(grid, processor.num_query_tokens) for grid in grids]
    per_image_model = [anyres.num_image_tokens(grid, model.visual_tokens_per_tile) for grid in model_grids]
    assert per_image == per_image_model
    bounds = np.cumsum([0, *(len(sample) for sample in samples)])
    expected = [sum(per_image[start:end]) for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    assert (inputs.input_ids == IMAGE_TOKEN_ID).sum(dim=1).tolist() == expected


# Visual prompts: arbitrary specs are drawn or rejected with a ValueError/TypeError, never anything else.

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(-100, 200), max_size=5),
)
coordinate = st.one_of(st.integers(-20, 80), st.floats(-50, 100), st.floats(allow_nan=True, allow_infinity=True))
point = st.lists(coordinate, min_size=2, max_size=2)
masks = st.sampled_from(["right", "right", "right", "wrong shape", "uint8", "empty", "L image", "RGB image"])


def mask_of(kind: str, width: int, height: int):
    mask = np.zeros((height, width), dtype=bool)
    mask[: max(height // 2, 1), : max(width // 2, 1)] = True
    return {
        "right": mask,
        "wrong shape": mask.T if width != height else mask[:, :-1],
        "uint8": mask.astype(np.uint8),
        "empty": np.zeros_like(mask),
        "L image": Image.fromarray(mask.astype(np.uint8) * 255),
        "RGB image": Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB"),
    }[kind]


GEOMETRY_AND_SIZE_KEYS = {
    "box": ("xyxy", "width"),
    "ellipse": ("xyxy", "width"),
    "arrow": ("xyxy", "width"),
    "point": ("xy", "radius"),
    "scribble": ("points", "width"),
    "triangle": ("points", "width"),
    "mask": ("mask", None),
    "mask_contour": ("mask", "width"),
}


def corners_for(shape_type: str):
    """Boxes and ellipses want `x1 <= x2` and `y1 <= y2`; an arrow may point anywhere."""

    def corners(values: list) -> list:
        if shape_type == "arrow":
            return values
        (x1, x2), (y1, y2) = sorted(values[::2]), sorted(values[1::2])
        return [x1, y1, x2, y2]

    return corners


def mostly(valid, rarely=junk):
    """Valid values most of the time, so that many prompts get drawn and the rest exercise the checks."""
    return st.one_of(*[valid] * 5, rarely)


@st.composite
def prompt_specs(draw, width: int, height: int):
    shape_type = draw(st.sampled_from(sorted(GEOMETRY_AND_SIZE_KEYS)))
    geometry_key, size_key = GEOMETRY_AND_SIZE_KEYS[shape_type]
    values = {
        "xyxy": mostly(st.lists(coordinate, min_size=4, max_size=4).map(corners_for(shape_type))),
        "xy": mostly(point),
        "points": mostly(
            st.lists(
                point, min_size=3 if shape_type == "triangle" else 2, max_size=3 if shape_type == "triangle" else 5
            )
        ),
        "mask": masks.map(lambda kind: mask_of(kind, width, height)),
        "color": mostly(
            st.sampled_from(["red", "gold", (1, 2, 3)]), st.sampled_from(["crimson", (256, 0, 0), (1, 2)])
        ),
        "alpha": mostly(st.floats(0, 1)),
        "width": mostly(st.integers(1, 40)),
        "radius": mostly(st.integers(1, 40)),
        "label": mostly(st.text(alphabet="ab1 ", max_size=6)),
    }
    spec = {"type": shape_type}
    for key in (geometry_key, size_key, "color", "alpha", "label"):
        if key is not None and (key == geometry_key or draw(st.booleans())):
            spec[key] = draw(values[key])
    if draw(st.sampled_from([False] * 9 + [True])):  # now and then a key of another shape, or no geometry
        foreign_key = draw(st.sampled_from(["xy", "points", "radius", "size"]))
        spec[foreign_key] = draw(values.get(foreign_key, junk))
        spec.pop(geometry_key, None)
    return spec


@settings(FUZZ, max_examples=30)
@given(data=st.data(), width=st.integers(1, 64), height=st.integers(1, 64))
def test_any_prompt_spec_is_drawn_or_rejected_with_a_documented_error(visual_prompts, data, width, height):
    prompts = data.draw(st.lists(prompt_specs(width, height), min_size=1, max_size=2))
    image = Image.new("RGB", (width, height), (40, 80, 120))
    try:
        drawn = visual_prompts.draw_visual_prompts(image, prompts)
    except (ValueError, TypeError) as error:
        assert str(error).startswith("visual_prompts["), f"the error does not name the prompt: {error}"
        event("rejected")
        return
    event("drawn")
    assert drawn.mode == "RGB" and drawn.size == image.size
    assert image.getpixel((0, 0)) == (40, 80, 120), "the input image was modified"
