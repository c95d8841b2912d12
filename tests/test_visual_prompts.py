"""Visual prompts: what each shape paints, pixel by pixel, and how malformed prompts are rejected."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vision_zephyr_tools.remote_code import load_repo_module


visual_prompts = load_repo_module("visual_prompts")
VISUAL_PROMPT_COLORS = visual_prompts.VISUAL_PROMPT_COLORS
describe_visual_prompt = visual_prompts.describe_visual_prompt
draw_visual_prompts = visual_prompts.draw_visual_prompts
validate_visual_prompts = visual_prompts.validate_visual_prompts


WIDTH, HEIGHT = 96, 72
BACKGROUND = (60, 120, 180)
RED = VISUAL_PROMPT_COLORS["red"]


def plain_image(size=(WIDTH, HEIGHT)) -> Image.Image:
    return Image.new("RGB", size, BACKGROUND)


def textured_image(size=(WIDTH, HEIGHT), seed=0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def blended(color, alpha, background=BACKGROUND) -> np.ndarray:
    """What alpha compositing `color` at `alpha` over an opaque `background` should give, rounded."""
    return np.round(alpha * np.array(color) + (1 - alpha) * np.array(background))


def pixel(image: Image.Image, x: int, y: int) -> np.ndarray:
    return np.asarray(image)[y, x].astype(int)


def assert_blended(image, points, color, alpha, background=BACKGROUND):
    # PIL stores alpha as round(alpha * 255) and rounds the blend; the difference to the exact blend stays within 1.
    for x, y in points:
        difference = np.abs(pixel(image, x, y) - blended(color, alpha, background)).max()
        assert difference <= 1, f"pixel {(x, y)} is {pixel(image, x, y)}, expected {color} at alpha {alpha}"


def assert_untouched(image, points, original=None):
    original = original if original is not None else plain_image(image.size)
    for x, y in points:
        assert (pixel(image, x, y) == pixel(original, x, y)).all(), f"pixel {(x, y)} changed to {pixel(image, x, y)}"


def rectangle_mask(left, top, right, bottom, size=(WIDTH, HEIGHT)) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[top : bottom + 1, left : right + 1] = True
    return mask


EVERY_SHAPE = [
    {"type": "box", "xyxy": [5, 5, 40, 30], "label": "1"},
    {"type": "ellipse", "xyxy": [45, 5, 90, 35], "color": "lime", "label": "2"},
    {"type": "arrow", "xyxy": [90, 70, 60, 45], "color": "yellow", "width": 2, "label": "3"},
    {"type": "point", "xy": [20, 55], "color": "fuchsia", "label": "4"},
    {"type": "scribble", "points": [[5, 40], [25, 65], [45, 40], [60, 65]], "color": "aqua", "label": "5"},
    {"type": "triangle", "points": [[50, 70], [70, 40], [90, 70]], "color": (10, 20, 30), "label": "6"},
    {"type": "mask", "mask": rectangle_mask(30, 20, 60, 50), "color": "blue", "label": "7"},
    {"type": "mask_contour", "mask": rectangle_mask(10, 10, 30, 25), "color": "gold", "width": 3, "label": "8"},
]


# Shapes, pixel by pixel


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("color, rgb", [("red", RED), ((10, 200, 30), (10, 200, 30)), ("orange", (255, 165, 0))])
def test_box_outline_has_the_colour_blended_at_the_requested_alpha(color, rgb, alpha):
    prompt = {"type": "box", "xyxy": [10, 10, 40, 30], "color": color, "alpha": alpha, "width": 3}
    image = draw_visual_prompts(plain_image(), [prompt])
    assert_blended(image, [(10, 10), (25, 10), (40, 30), (12, 20), (38, 20), (25, 28)], rgb, alpha)
    assert_untouched(image, [(13, 13), (25, 20), (37, 27), (9, 9), (41, 20), (90, 70)])


def test_box_default_width_scales_with_the_image_like_the_original():
    image = draw_visual_prompts(plain_image((672, 336)), [{"type": "box", "xyxy": [100, 100, 300, 200]}])
    assert_blended(image, [(100, 150), (105, 150)], RED, 0.5)  # max(int(3 * 672 / 336), 1) = 6 px
    assert_untouched(image, [(106, 150), (99, 150)])


def test_ellipse_touches_its_box_sides_but_not_its_corners():
    prompt = {"type": "ellipse", "xyxy": [20, 10, 70, 50], "width": 2}
    image = draw_visual_prompts(plain_image(), [prompt])
    assert_blended(image, [(20, 30), (70, 30), (45, 10), (45, 50)], RED, 0.5)
    assert_untouched(image, [(20, 10), (70, 10), (20, 50), (70, 50), (23, 13), (45, 30)])


@pytest.mark.parametrize("xyxy", [[10, 60, 80, 10], [80, 10, 10, 60], [40, 5, 40, 65], [5, 36, 88, 36]])
def test_arrow_runs_from_its_tail_and_ends_in_a_head_at_its_end_point(xyxy):
    image = draw_visual_prompts(plain_image(), [{"type": "arrow", "xyxy": xyxy, "width": 2}])
    tail, tip = np.array(xyxy[:2]), np.array(xyxy[2:])
    direction = (tip - tail) / np.linalg.norm(tip - tail)
    assert_blended(image, [tuple(tail), tuple(tip)], RED, 0.5)
    beyond_tip = np.round(tip + 3 * direction).astype(int)
    beside_shaft = np.round((tail + tip) / 2 + 6 * np.array([-direction[1], direction[0]])).astype(int)
    assert_untouched(image, [tuple(beyond_tip), tuple(beside_shaft)])


def test_arrow_head_is_wider_than_its_shaft():
    image = draw_visual_prompts(plain_image(), [{"type": "arrow", "xyxy": [5, 36, 85, 36], "width": 2}])
    coloured_rows = np.flatnonzero((np.asarray(image) != BACKGROUND).any(axis=2).any(axis=1))
    assert len(coloured_rows) > 10, f"the arrow covers rows {coloured_rows}, expected a head much wider than 2 px"


def test_point_is_a_filled_disc_of_its_radius():
    image = draw_visual_prompts(plain_image(), [{"type": "point", "xy": [40, 30], "radius": 5, "color": "purple"}])
    assert_blended(image, [(40, 30), (45, 30), (40, 25), (37, 33)], VISUAL_PROMPT_COLORS["purple"], 0.5)
    assert_untouched(image, [(46, 30), (40, 36), (45, 35), (34, 24)])


def test_point_default_radius_scales_with_the_image_like_the_original():
    image = draw_visual_prompts(plain_image((672, 336)), [{"type": "point", "xy": [300, 150]}])
    assert_blended(image, [(316, 150)], RED, 0.5)  # max(int(8 * 672 / 336), 1) = 16 px
    assert_untouched(image, [(317, 150)])


@pytest.mark.parametrize("as_image", [False, True], ids=["bool array", "L image"])
def test_mask_blends_its_interior_at_the_lower_default_alpha(as_image):
    mask = rectangle_mask(30, 20, 59, 39)
    mask_input = Image.fromarray(mask.astype(np.uint8) * 255) if as_image else mask
    image = draw_visual_prompts(plain_image(), [{"type": "mask", "mask": mask_input, "color": "aqua"}])
    assert_blended(image, [(30, 20), (45, 30), (59, 39)], VISUAL_PROMPT_COLORS["aqua"], 0.35)
    assert_untouched(image, [(29, 30), (60, 30), (45, 19), (45, 40), (5, 5)])


def test_mask_contour_is_a_band_centred_on_the_boundary_and_leaves_the_interior_untouched():
    mask = rectangle_mask(30, 20, 59, 39)
    image = draw_visual_prompts(plain_image(), [{"type": "mask_contour", "mask": mask, "width": 3}])
    # Width 3: two pixels inside the mask, one outside.
    assert_blended(image, [(29, 30), (30, 30), (31, 30), (45, 19), (45, 20), (45, 21), (60, 39)], RED, 0.5)
    assert_untouched(image, [(28, 30), (32, 30), (45, 30), (45, 18), (45, 22), (57, 37)])


def chebyshev_dilation(mask: np.ndarray, radius: int, outside: bool) -> np.ndarray:
    padded = np.pad(mask, radius, constant_values=outside)
    height, width = mask.shape
    shifted = [
        padded[dy : dy + height, dx : dx + width] for dy in range(2 * radius + 1) for dx in range(2 * radius + 1)
    ]
    return np.logical_or.reduce(shifted)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 7, 12])
def test_mask_contour_band_matches_brute_force_morphology(width):
    mask = np.random.default_rng(width).random((HEIGHT, WIDTH)) < 0.02
    mask = chebyshev_dilation(mask, 4, outside=False)  # blobs with holes and image-border contact
    image = draw_visual_prompts(plain_image(), [{"type": "mask_contour", "mask": mask, "width": width, "alpha": 1.0}])
    inner, outer = (width + 1) // 2, width // 2
    band = chebyshev_dilation(mask, outer, outside=False) & chebyshev_dilation(~mask, inner, outside=True)
    painted = (np.asarray(image) != BACKGROUND).any(axis=2)
    assert np.array_equal(painted, band), f"{(painted != band).sum()} pixels differ from the expected band"


def test_mask_contour_follows_the_image_border_where_the_mask_is_cut_by_it():
    image = draw_visual_prompts(
        plain_image(), [{"type": "mask_contour", "mask": rectangle_mask(0, 20, 40, 50), "width": 1}]
    )
    assert_blended(image, [(0, 35), (40, 35), (20, 20)], RED, 0.5)
    assert_untouched(image, [(1, 35), (20, 35)])


def test_scribble_passes_through_every_control_point():
    points = [[10, 60], [30, 10], [60, 60], [85, 15]]
    image = draw_visual_prompts(plain_image(), [{"type": "scribble", "points": points, "width": 3, "color": "blue"}])
    assert_blended(image, [tuple(point) for point in points], VISUAL_PROMPT_COLORS["blue"], 0.5)
    assert_untouched(image, [(90, 70), (5, 5), (45, 68)])


def test_triangle_is_an_outline_through_its_three_corners():
    points = [[10, 60], [48, 8], [86, 60]]
    image = draw_visual_prompts(plain_image(), [{"type": "triangle", "points": points, "width": 3}])
    assert_blended(image, [(10, 60), (48, 8), (86, 60), (48, 60), (29, 34)], RED, 0.5)
    assert_untouched(image, [(48, 43), (5, 5), (90, 10)])


@pytest.mark.parametrize(
    "xyxy, expected_rows",
    [([30, 30, 70, 60], range(10, 30)), ([30, 2, 70, 40], range(41, 60))],
    ids=["above the shape", "below the shape when there is no room above"],
)
def test_label_is_drawn_next_to_the_shape_top_left_corner(xyxy, expected_rows):
    prompt = {"type": "box", "xyxy": xyxy, "width": 2}
    unlabelled = np.asarray(draw_visual_prompts(plain_image(), [prompt]))
    labelled = np.asarray(draw_visual_prompts(plain_image(), [{**prompt, "label": "7"}]))
    rows, columns = np.nonzero((unlabelled != labelled).any(axis=2))
    assert len(rows) > 20, "the label changed almost no pixels"
    assert set(rows) <= set(expected_rows), f"label rows {sorted(set(rows))}, expected within {expected_rows}"
    assert columns.min() >= xyxy[0] and columns.max() < xyxy[0] + 30, f"label columns {sorted(set(columns))}"


def test_prompts_are_composited_in_list_order():
    first = {"type": "box", "xyxy": [10, 10, 40, 40], "color": "red", "alpha": 1.0, "width": 3}
    second = {"type": "box", "xyxy": [10, 10, 60, 60], "color": "blue", "alpha": 1.0, "width": 3}
    assert_blended(draw_visual_prompts(plain_image(), [first, second]), [(10, 10)], VISUAL_PROMPT_COLORS["blue"], 1)
    assert_blended(draw_visual_prompts(plain_image(), [second, first]), [(10, 10)], RED, 1)


def test_zero_alpha_changes_nothing():
    image = draw_visual_prompts(textured_image(), [{**prompt, "alpha": 0.0} for prompt in EVERY_SHAPE])
    assert np.array_equal(np.asarray(image), np.asarray(textured_image()))


# Clipping, determinism, input handling


@pytest.mark.parametrize(
    "outside, clipped",
    [
        ({"type": "box", "xyxy": [-20, -10, 40, 30]}, {"type": "box", "xyxy": [0, 0, 40, 30]}),
        ({"type": "ellipse", "xyxy": [50, 40, 200, 100]}, {"type": "ellipse", "xyxy": [50, 40, 95, 71]}),
        (
            {"type": "arrow", "xyxy": [-30, 36, 50, 36], "width": 2},
            {"type": "arrow", "xyxy": [0, 36, 50, 36], "width": 2},
        ),
        (
            {"type": "scribble", "points": [[-10, -10], [50, 30], [120, 60]]},
            {"type": "scribble", "points": [[0, 0], [50, 30], [95, 60]]},
        ),
    ],
)
def test_coordinates_outside_the_image_are_clipped_to_its_border(outside, clipped):
    drawn_outside = draw_visual_prompts(plain_image(), [outside])
    drawn_clipped = draw_visual_prompts(plain_image(), [clipped])
    assert np.array_equal(np.asarray(drawn_outside), np.asarray(drawn_clipped))


@pytest.mark.parametrize(
    "prompt, key",
    [
        ({"type": "box", "xyxy": [-50, -50, -10, -10]}, "xyxy"),
        ({"type": "ellipse", "xyxy": [100, 10, 140, 30]}, "xyxy"),
        ({"type": "point", "xy": [-5, 200]}, "xy"),
        ({"type": "arrow", "xyxy": [10, -40, 60, -5]}, "xyxy"),
        ({"type": "scribble", "points": [[10, 80], [50, 90], [90, 200]]}, "points"),
        ({"type": "triangle", "points": [[-9, -9], [-1, -30], [-20, -2]]}, "points"),
    ],
)
def test_a_prompt_entirely_outside_the_image_is_refused_not_clipped_to_a_sliver(prompt, key):
    with pytest.raises(ValueError, match=rf"visual_prompts\[0\]\['{key}'\]: lies entirely outside the 96x72 image"):
        draw_visual_prompts(plain_image(), [prompt])


def test_box_reaching_out_of_the_image_is_outlined_along_the_border():
    image = draw_visual_prompts(plain_image(), [{"type": "box", "xyxy": [-20, -10, 40, 30], "width": 1}])
    assert_blended(image, [(0, 15), (20, 0), (40, 15)], RED, 0.5)


def test_drawing_is_deterministic():
    first = draw_visual_prompts(textured_image(), EVERY_SHAPE)
    second = draw_visual_prompts(textured_image(), EVERY_SHAPE)
    assert first.tobytes() == second.tobytes()


def test_input_image_is_left_unchanged_and_a_new_rgb_image_returned():
    image = textured_image()
    before = image.tobytes()
    drawn = draw_visual_prompts(image, EVERY_SHAPE)
    assert image.tobytes() == before
    assert drawn is not image and drawn.mode == "RGB" and drawn.size == image.size


@pytest.mark.parametrize("prompts", [None, []])
def test_no_prompts_give_an_rgb_copy(prompts):
    image = textured_image()
    drawn = draw_visual_prompts(image, prompts)
    assert drawn is not image and drawn.tobytes() == image.tobytes()


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_other_image_modes_are_drawn_on_their_rgb_conversion(mode):
    image = textured_image().convert(mode)
    expected = draw_visual_prompts(image.convert("RGB"), EVERY_SHAPE)
    assert draw_visual_prompts(image, EVERY_SHAPE).tobytes() == expected.tobytes()


# Region compositing equals the definition: one full-size overlay per prompt, composited in order


def draw_with_full_size_overlays(image: Image.Image, prompts) -> Image.Image:
    canvas = image.convert("RGB").convert("RGBA")
    for prompt in validate_visual_prompts(prompts, image.size):
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        for mark in visual_prompts._prompt_marks(prompt, image.size):
            mark.paint(overlay, (0, 0), visual_prompts._ink(prompt))
        canvas = Image.alpha_composite(canvas, overlay)
    return canvas.convert("RGB")


def test_pasting_through_alpha_equals_alpha_compositing_on_an_opaque_image():
    """The shortcut the drawing code takes, checked for every alpha and background value."""
    alpha, background = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    source = np.stack([np.full_like(alpha, 255), np.zeros_like(alpha), 255 - background, alpha], axis=-1)
    overlay = Image.fromarray(source.astype(np.uint8))
    image = Image.fromarray(np.stack([background, background, alpha], axis=-1).astype(np.uint8))
    composited = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    image.paste(overlay, (0, 0), overlay)
    assert image.tobytes() == composited.tobytes()


def test_every_shape_matches_the_full_size_overlay_reference():
    image = textured_image()
    expected = draw_with_full_size_overlays(image, EVERY_SHAPE)
    assert draw_visual_prompts(image, EVERY_SHAPE).tobytes() == expected.tobytes()


@st.composite
def random_prompts(draw):
    width, height = draw(st.integers(4, 80)), draw(st.integers(4, 80))
    x = st.floats(-30, width + 30)
    y = st.floats(-30, height + 30)
    point = st.tuples(x, y)
    prompts = []
    for _ in range(draw(st.integers(1, 4))):
        shape_type = draw(st.sampled_from(list(visual_prompts.GEOMETRY_KEYS)))
        prompt = {"type": shape_type, "alpha": draw(st.floats(0, 1)), "label": draw(st.sampled_from(["", "1", "Ag"]))}
        if shape_type in ("box", "ellipse"):
            x1, x2 = sorted(draw(st.tuples(x, x)))
            y1, y2 = sorted(draw(st.tuples(y, y)))
            prompt["xyxy"] = [x1, y1, x2, y2]
        elif shape_type == "arrow":
            tail = draw(point)
            head = draw(point.filter(lambda head, tail=tail: head != tail))
            prompt["xyxy"] = [*tail, *head]
        elif shape_type == "point":
            prompt["xy"] = list(draw(point))
        elif shape_type in ("scribble", "triangle"):
            count = 3 if shape_type == "triangle" else draw(st.integers(2, 6))
            prompt["points"] = draw(st.lists(point, min_size=count, max_size=count, unique=True))
        else:
            mask = np.random.default_rng(draw(st.integers(0, 2**16))).random((height, width)) < draw(st.floats(0, 1))
            mask[draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))] = True
            prompt["mask"] = mask
        if shape_type == "point":
            prompt["radius"] = draw(st.integers(1, 20))
        elif shape_type != "mask":
            prompt["width"] = draw(st.integers(1, 16))
        prompts.append(prompt)
    return (width, height), prompts


def drawable(size, prompts) -> bool:
    try:
        validate_visual_prompts(prompts, size)
    except ValueError:  # clipping can collapse an arrow or a scribble to a single pixel
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(random_prompts())
def test_region_compositing_matches_the_full_size_overlay_reference(size_and_prompts):
    size, prompts = size_and_prompts
    if not drawable(size, prompts):
        return
    image = textured_image(size)
    expected = draw_with_full_size_overlays(image, prompts)
    assert draw_visual_prompts(image, prompts).tobytes() == expected.tobytes()


# Validation


def test_validation_fills_in_defaults_scaled_to_the_image():
    prompts = [
        {"type": "box", "xyxy": [1, 2, 300, 200]},
        {"type": "point", "xy": [5, 6], "color": [1, 2, 3]},
        {"type": "mask", "mask": np.ones((336, 672), dtype=bool), "color": "Gold"},
    ]
    box, point, mask = validate_visual_prompts(prompts, (672, 336))
    assert box == {
        "type": "box",
        "xyxy": (1.0, 2.0, 300.0, 200.0),
        "color": "red",
        "alpha": 0.5,
        "width": 6,
        "label": None,
    }
    assert point == {"type": "point", "xy": (5.0, 6.0), "color": (1, 2, 3), "alpha": 0.5, "radius": 16, "label": None}
    assert (mask["color"], mask["alpha"], mask["mask"].shape) == ("gold", 0.35, (336, 672))


def test_validation_clips_coordinates_and_is_idempotent():
    prompts = [
        {"type": "box", "xyxy": [-5, -5, 200, 10], "label": "A"},
        {"type": "scribble", "points": [[-1, 3], [50, 500]], "width": 2, "alpha": 1},
    ]
    validated = validate_visual_prompts(prompts, (WIDTH, HEIGHT))
    assert validated[0]["xyxy"] == (0.0, 0.0, 95.0, 10.0)
    assert validated[1]["points"] == ((0.0, 3.0), (50.0, 71.0))
    assert validate_visual_prompts(validated, (WIDTH, HEIGHT)) == validated


VALID = {"type": "box", "xyxy": [1, 2, 30, 40]}


@pytest.mark.parametrize(
    "prompt, error, key",
    [
        ({"type": "circle", "xy": [1, 2]}, ValueError, "type"),
        ({"type": ["box"], "xyxy": [1, 2, 3, 4]}, ValueError, "type"),
        ({"xyxy": [1, 2, 3, 4]}, ValueError, "type"),
        ({"type": "box"}, ValueError, "xyxy"),
        ({"type": "box", "xyxy": [1, 2, 3]}, ValueError, "xyxy"),
        ({"type": "box", "xyxy": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}}, TypeError, "xyxy"),
        ({"type": "box", "xyxy": "1, 2, 3, 4"}, TypeError, "xyxy"),
        ({"type": "box", "xyxy": ["1", 2, 3, 4]}, TypeError, "xyxy"),
        ({"type": "box", "xyxy": [1, 2, float("nan"), 4]}, ValueError, "xyxy"),
        ({"type": "ellipse", "xyxy": [1, 2, float("inf"), 4]}, ValueError, "xyxy"),
        ({"type": "box", "xyxy": [30, 2, 10, 40]}, ValueError, "xyxy"),
        ({"type": "ellipse", "xyxy": [1, 40, 30, 2]}, ValueError, "xyxy"),
        ({"type": "arrow", "xyxy": [5, 5, 5, 5]}, ValueError, "xyxy"),
        ({"type": "point", "xy": [1, 2, 3]}, ValueError, "xy"),
        ({"type": "point", "xy": [[1, 2]]}, ValueError, "xy"),
        ({"type": "point", "xy": [True, 2]}, TypeError, "xy"),
        ({"type": "scribble", "points": [[1, 2]]}, ValueError, "points"),
        ({"type": "scribble", "points": [[1, 2], [1, 2]]}, ValueError, "points"),
        ({"type": "scribble", "points": [[1, 2], [3, "4"]]}, TypeError, "points"),
        ({"type": "triangle", "points": [[1, 2], [3, 4], [5, 6], [7, 8]]}, ValueError, "points"),
        ({"type": "triangle", "points": {"a": [1, 2]}}, TypeError, "points"),
        ({"type": "mask", "mask": np.ones((10, 10), dtype=bool)}, ValueError, "mask"),
        ({"type": "mask", "mask": np.ones((WIDTH, HEIGHT), dtype=bool)}, ValueError, "mask"),
        ({"type": "mask", "mask": np.ones((HEIGHT, WIDTH), dtype=np.uint8)}, TypeError, "mask"),
        ({"type": "mask_contour", "mask": np.zeros((HEIGHT, WIDTH), dtype=bool)}, ValueError, "mask"),
        ({"type": "mask", "mask": Image.new("L", (10, 10), 255)}, ValueError, "mask"),
        ({"type": "mask", "mask": Image.new("RGB", (WIDTH, HEIGHT))}, TypeError, "mask"),
        ({"type": "mask", "mask": [[True]]}, TypeError, "mask"),
        ({**VALID, "alpha": 1.5}, ValueError, "alpha"),
        ({**VALID, "alpha": -0.1}, ValueError, "alpha"),
        ({**VALID, "alpha": float("nan")}, ValueError, "alpha"),
        ({**VALID, "alpha": "0.5"}, TypeError, "alpha"),
        ({**VALID, "color": "crimson"}, ValueError, "color"),
        ({**VALID, "color": (256, 0, 0)}, ValueError, "color"),
        ({**VALID, "color": (255.0, 0, 0)}, TypeError, "color"),
        ({**VALID, "color": [255, 0]}, TypeError, "color"),
        ({**VALID, "color": {"r": 255}}, TypeError, "color"),
        ({**VALID, "width": 0}, ValueError, "width"),
        ({**VALID, "width": 2.5}, TypeError, "width"),
        ({**VALID, "width": "3"}, TypeError, "width"),
        ({"type": "point", "xy": [1, 2], "radius": -1}, ValueError, "radius"),
        ({**VALID, "label": 1}, TypeError, "label"),
        ({**VALID, "label": "two\nlines"}, ValueError, "label"),
        ({**VALID, "colour": "red"}, ValueError, "colour"),
        ({"type": "point", "xy": [1, 2], "width": 3}, ValueError, "width"),
        ({"type": "mask", "mask": rectangle_mask(1, 1, 5, 5), "width": 3}, ValueError, "width"),
    ],
)
def test_malformed_prompt_raises_naming_its_index_and_key(prompt, error, key):
    with pytest.raises(error) as raised:
        validate_visual_prompts([VALID, prompt], (WIDTH, HEIGHT))
    assert f"visual_prompts[1][{key!r}]" in str(raised.value), f"message does not name the key: {raised.value}"


def test_error_message_says_what_was_received_and_what_is_expected():
    with pytest.raises(ValueError, match=r"visual_prompts\[0\]\['color'\]: expected one of .*'red'.* got 'crimson'"):
        validate_visual_prompts([{**VALID, "color": "crimson"}], (WIDTH, HEIGHT))
    with pytest.raises(
        ValueError, match=r"expected shape \(72, 96\) \(height, width\), got an array of shape \(10, 10\)"
    ):
        validate_visual_prompts([{"type": "mask", "mask": np.ones((10, 10), dtype=bool)}], (WIDTH, HEIGHT))


@pytest.mark.parametrize(
    "prompts, error",
    [({"type": "box", "xyxy": [1, 2, 3, 4]}, TypeError), ("box", TypeError), ([["box"]], TypeError)],
    ids=["a dict instead of a list", "a string", "a list instead of a dict"],
)
def test_wrong_container_types_raise_type_error(prompts, error):
    with pytest.raises(error, match=r"visual_prompts"):
        draw_visual_prompts(plain_image(), prompts)


@pytest.mark.parametrize("image_size", [(0, 10), (10,), (10.0, 10), (True, 10), "10x10"])
def test_image_size_must_be_two_positive_ints(image_size):
    with pytest.raises(ValueError, match="image_size"):
        validate_visual_prompts([VALID], image_size)


def test_image_must_be_a_pil_image():
    with pytest.raises(TypeError, match="image"):
        draw_visual_prompts(np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8), [VALID])


# Phrases


@pytest.mark.parametrize(
    "prompt, noun, phrase",
    [
        ({"type": "box", "color": "red"}, "object", "the object within the red rectangle"),
        ({"type": "ellipse", "color": "lime"}, "object", "the object within the lime ellipse"),
        ({"type": "triangle", "color": "orange"}, "object", "the object with the orange triangle"),
        ({"type": "point", "color": "fuchsia"}, "person", "the person at the fuchsia point"),
        ({"type": "scribble", "color": "blue"}, "object", "the object with the blue scribble"),
        ({"type": "mask_contour", "color": "lime"}, "dog", "the dog with the lime mask contour"),
        ({"type": "mask", "color": "purple"}, "object", "the object with the purple mask"),
        ({"type": "arrow"}, "object", "the object pointed to by the red arrow"),
        ({"type": "box", "color": (255, 0, 0)}, "car", "the car within the rectangle"),
    ],
)
def test_describe_gives_the_original_training_phrase(prompt, noun, phrase):
    assert describe_visual_prompt(prompt, noun) == phrase


def test_describe_rejects_unknown_shapes_and_colours():
    with pytest.raises(ValueError, match=r"prompt\['type'\]"):
        describe_visual_prompt({"type": "star"})
    with pytest.raises(ValueError, match=r"prompt\['color'\]"):
        describe_visual_prompt({"type": "box", "color": "crimson"})
