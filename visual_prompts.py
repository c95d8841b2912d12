"""Visual prompts for Vision-Zephyr: validation, deterministic drawing and the phrases the model was trained on.

A visual prompt is a plain dict drawn onto the image before tiling, ViP-LLaVA style, so the model can be asked about
"the person within the red rectangle". Coordinates are pixels of the original image, `(x, y)` with `x` to the right;
coordinates outside the image are clipped to its border pixels. One prompt is one dict:

| `type`         | geometry key | geometry                                                          | size key |
|----------------|--------------|-------------------------------------------------------------------|----------|
| `box`          | `xyxy`       | `[x1, y1, x2, y2]`, corners included, `x1 <= x2`, `y1 <= y2`       | `width`  |
| `ellipse`      | `xyxy`       | bounding box of the ellipse, as for `box`                         | `width`  |
| `arrow`        | `xyxy`       | tail `(x1, y1)`, head at `(x2, y2)`, pointing at `(x2, y2)`       | `width`  |
| `point`        | `xy`         | `[x, y]`, centre of a filled disc                                 | `radius` |
| `scribble`     | `points`     | two or more `[x, y]`; a Catmull-Rom curve passes through them all | `width`  |
| `triangle`     | `points`     | exactly three `[x, y]`, drawn as an outline                       | `width`  |
| `mask`         | `mask`       | H×W bool numpy array or L-mode PIL image (non-zero = inside)      | —        |
| `mask_contour` | `mask`       | as `mask`; only a band of `width` px centred on its boundary      | `width`  |

Style keys, all optional:
- `color`: one of `VISUAL_PROMPT_COLORS` (the original's nine names) or an RGB triple of ints in 0-255. Default
  `"red"`.
- `alpha`: opacity in [0, 1]. Default 0.5 (the original's evaluation alpha, 128/255), 0.35 for `mask` (the middle of
  the original's random mask opacities, 48-128 out of 255) so that the object stays visible under the fill.
- `width` / `radius` in pixels. Defaults scale with the image as the original's fixed-style rule, with
  `s = max(width, height) / 336`: line width `max(int(3 * s), 1)`, point radius `max(int(8 * s), 1)`. Unlike the
  original, an explicit value is used as given (the original multiplied it by `s` as well), up to
  `2 * (width + height)` of the image, where a stroke or disc already covers all of it; larger values are capped.
- `label`: a short text drawn in a tag of the prompt's colour just above the shape's top-left corner (below the
  shape, or inside the image, when there is no room), Set-of-Mark style, with PIL's default font scaled like `width`.

Each prompt is drawn on its own transparent RGBA overlay and alpha-composited onto the image, in list order, as the
original does; nothing is random.
"""

import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont


VISUAL_PROMPT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "lime": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "fuchsia": (255, 0, 255),
    "aqua": (0, 255, 255),
    "orange": (255, 165, 0),
    "purple": (128, 0, 128),
    "gold": (255, 215, 0),
}

DEFAULT_COLOR = "red"
DEFAULT_ALPHA = 0.5
DEFAULT_MASK_ALPHA = 0.35
# The original scales every size from a 336-pixel image, the CLIP tile size.
SIZE_ANCHOR = 336

GEOMETRY_KEYS = {
    "box": "xyxy",
    "ellipse": "xyxy",
    "arrow": "xyxy",
    "point": "xy",
    "scribble": "points",
    "triangle": "points",
    "mask": "mask",
    "mask_contour": "mask",
}
SIZE_KEYS = {
    "box": "width",
    "ellipse": "width",
    "arrow": "width",
    "point": "radius",
    "scribble": "width",
    "triangle": "width",
    "mask": None,
    "mask_contour": "width",
}
STYLE_KEYS = ("color", "alpha", "label")

# Shape words of the original's training phrases, e.g. "the person within the red rectangle".
SHAPE_PHRASES = {
    "box": ("within", "rectangle"),
    "ellipse": ("within", "ellipse"),
    "triangle": ("with", "triangle"),
    "point": ("at", "point"),
    "scribble": ("with", "scribble"),
    "mask_contour": ("with", "mask contour"),
    "mask": ("with", "mask"),
    "arrow": ("pointed to by", "arrow"),
}

# The original's arrow head: wings at 60 degrees on each side of the shaft, at least twice the line width long.
ARROW_HEAD_HALF_ANGLE = math.radians(60)
ARROW_HEAD_LENGTH_RATIO = 0.35


def validate_visual_prompts(prompts: Sequence[Mapping] | None, image_size: tuple[int, int]) -> list[dict]:
    """Checks visual prompts against the schema in this module's docstring and fills in the defaults.

    Args:
        prompts (`Sequence[Mapping]` or `None`):
            The prompts of one image; `None` means none.
        image_size (`tuple[int, int]`):
            `(width, height)` of the image, PIL's order.

    Returns:
        `list[dict]`: One dict per prompt with every key of its type present: coordinates as floats clipped to the
        image (`xyxy` and `xy` tuples, `points` a tuple of pairs), `mask` an H×W bool array, `color` a lower-case
        name or an RGB tuple, `alpha` a float, `width` or `radius` an int, `label` a str or `None`. Validating the
        result again returns the same values.

    Raises:
        `TypeError` or `ValueError`, naming the prompt index and key, the value received and what is expected.
    """
    image_size = _checked_image_size(image_size)
    if prompts is None:
        return []
    if isinstance(prompts, (str, bytes, Mapping)) or not isinstance(prompts, Sequence):
        raise TypeError(f"visual_prompts: expected a list of prompt dicts, got {_show(prompts)}")
    return [_validated_prompt(prompt, index, image_size) for index, prompt in enumerate(prompts)]


def describe_visual_prompt(prompt: Mapping, noun: str = "object") -> str:
    """The phrase the original model was trained on for an object marked by `prompt`.

    Args:
        prompt (`Mapping`):
            A visual prompt; only its `type` and `color` are read.
        noun (`str`, *optional*, defaults to `"object"`):
            What is marked, e.g. `"person"`.

    Returns:
        `str`: e.g. `"the object within the red rectangle"`, `"the person at the fuchsia point"`, `"the object pointed
        to by the red arrow"`. An RGB-triple colour has no name and is left out, as in the original.
    """
    if not isinstance(prompt, Mapping):
        raise TypeError(f"prompt: expected a dict, got {_show(prompt)}")
    shape_type = _checked_type(prompt, "prompt")
    color = _checked_color(prompt.get("color", DEFAULT_COLOR), "prompt['color']")
    preposition, shape_word = SHAPE_PHRASES[shape_type]
    color_word = f"{color} " if isinstance(color, str) else ""
    return f"the {noun} {preposition} the {color_word}{shape_word}"


def draw_visual_prompts(image: Image.Image, prompts: Sequence[Mapping] | None) -> Image.Image:
    """Draws visual prompts onto a copy of `image`.

    Each prompt is painted on a transparent RGBA overlay and alpha-composited onto the image in list order, as the
    original does. Only the region a prompt covers is composited, which gives the same pixels as full-size overlays.

    Args:
        image (`PIL.Image.Image`):
            The image; any mode, converted to RGB first (transparency is dropped). It is not modified.
        prompts (`Sequence[Mapping]` or `None`):
            The prompts, see this module's docstring.

    Returns:
        `PIL.Image.Image`: A new RGB image of the same size.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image: expected a PIL.Image.Image, got {_show(image)}")
    canvas = image.convert("RGB")
    for prompt in validate_visual_prompts(prompts, canvas.size):
        _composite_prompt(canvas, prompt)
    return canvas


# Validation


def _show(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, Image.Image):
        return f"a {value.mode}-mode image of size {value.size}"
    text = repr(value)
    return f"{text[:80]}... ({type(value).__name__})" if len(text) > 80 else f"{text} ({type(value).__name__})"


def _checked_image_size(image_size) -> tuple[int, int]:
    is_pair = isinstance(image_size, Sequence) and len(image_size) == 2
    is_size = is_pair and all(_is_int(side) and side > 0 for side in image_size)
    if not is_size:
        raise ValueError(f"image_size: expected (width, height) as two positive ints, got {_show(image_size)}")
    return int(image_size[0]), int(image_size[1])


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _validated_prompt(prompt, index: int, image_size: tuple[int, int]) -> dict:
    where = f"visual_prompts[{index}]"
    if not isinstance(prompt, Mapping):
        raise TypeError(f"{where}: expected a dict, got {_show(prompt)}")
    shape_type = _checked_type(prompt, where)
    geometry_key = GEOMETRY_KEYS[shape_type]
    size_key = SIZE_KEYS[shape_type]
    allowed_keys = ("type", geometry_key, *STYLE_KEYS, *([size_key] if size_key else []))
    for key in prompt:
        if key not in allowed_keys:
            raise ValueError(
                f"{where}[{key!r}]: unknown key for a {shape_type!r} prompt, expected one of {allowed_keys}"
            )
    if geometry_key not in prompt:
        raise ValueError(f"{where}[{geometry_key!r}]: missing, a {shape_type!r} prompt needs it")

    field = f"{where}[{geometry_key!r}]"
    validated = {
        "type": shape_type,
        geometry_key: _GEOMETRY_CHECKS[shape_type](prompt[geometry_key], field, image_size),
    }
    validated["color"] = _checked_color(prompt.get("color", DEFAULT_COLOR), f"{where}['color']")
    default_alpha = DEFAULT_MASK_ALPHA if shape_type == "mask" else DEFAULT_ALPHA
    validated["alpha"] = _checked_alpha(prompt.get("alpha", default_alpha), f"{where}['alpha']")
    if size_key:
        default_size = default_stroke_size(size_key, image_size)
        size = _checked_size(prompt.get(size_key, default_size), f"{where}[{size_key!r}]")
        # A stroke or disc this wide already covers the whole image; larger values made PIL overflow its C ints
        # (width >= 2**31) or spend minutes on a disc far bigger than the image (radius 10**7: ~1 min).
        validated[size_key] = min(size, _max_size(image_size))
    validated["label"] = _checked_label(prompt.get("label"), f"{where}['label']")
    return validated


def _checked_type(prompt: Mapping, where: str) -> str:
    if "type" not in prompt:
        raise ValueError(f"{where}['type']: missing, expected one of {tuple(GEOMETRY_KEYS)}")
    shape_type = prompt["type"]
    if not isinstance(shape_type, str) or shape_type not in GEOMETRY_KEYS:
        raise ValueError(f"{where}['type']: expected one of {tuple(GEOMETRY_KEYS)}, got {_show(shape_type)}")
    return shape_type


def default_stroke_size(size_key: str, image_size: tuple[int, int]) -> int:
    """The default `width` (lines) or `radius` (points) in pixels for an image of `image_size` `(width, height)`."""
    scale = max(image_size) / SIZE_ANCHOR
    return max(int((8 if size_key == "radius" else 3) * scale), 1)


def _max_size(image_size: tuple[int, int]) -> int:
    return 2 * (image_size[0] + image_size[1])


def _checked_number(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{field}: expected a number, got {_show(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{field}: expected a finite number, got {_show(value)}")
    return float(value)


def _checked_numbers(value, length: int, field: str, expected: str) -> list[float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{field}: expected a list {expected}, got {_show(value)}")
    if len(value) != length:
        raise ValueError(f"{field}: expected a list {expected}, got {_show(value)}")
    return [_checked_number(number, f"{field}[{position}]") for position, number in enumerate(value)]


def _clipped_point(x: float, y: float, image_size: tuple[int, int]) -> tuple[float, float]:
    width, height = image_size
    return min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)


def _checked_reaches_image(xs: Sequence[float], ys: Sequence[float], field: str, value, image_size) -> None:
    """A shape entirely outside the image would be clipped to a sliver on its border: almost surely a mistake (e.g.
    coordinates of another image), so it is refused instead of silently marking the wrong spot."""
    width, height = image_size
    if max(xs) < 0 or min(xs) > width - 1 or max(ys) < 0 or min(ys) > height - 1:
        raise ValueError(
            f"{field}: lies entirely outside the {width}x{height} image (pixel coordinates of this image are "
            f"expected, x in 0..{width - 1} and y in 0..{height - 1}), got {_show(value)}"
        )


def _checked_point(value, field: str, image_size: tuple[int, int]) -> tuple[float, float]:
    x, y = _checked_numbers(value, 2, field, "[x, y]")
    _checked_reaches_image([x], [y], field, value, image_size)
    return _clipped_point(x, y, image_size)


def _checked_points(value, count: int | None, field: str, image_size) -> tuple[tuple[float, float], ...]:
    expected = "of [x, y] pairs" + (f", exactly {count}" if count else ", at least 2")
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{field}: expected a list {expected}, got {_show(value)}")
    if len(value) < 2 or (count and len(value) != count):
        raise ValueError(f"{field}: expected a list {expected}, got {_show(value)}")
    pairs = [_checked_numbers(point, 2, f"{field}[{position}]", "[x, y]") for position, point in enumerate(value)]
    _checked_reaches_image([x for x, _ in pairs], [y for _, y in pairs], field, value, image_size)
    return tuple(_clipped_point(x, y, image_size) for x, y in pairs)


def _checked_triangle(value, field: str, image_size) -> tuple[tuple[float, float], ...]:
    return _checked_points(value, 3, field, image_size)


def _checked_corners(value, field: str, image_size) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = _checked_numbers(value, 4, field, "[x1, y1, x2, y2]")
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{field}: expected x1 <= x2 and y1 <= y2 in [x1, y1, x2, y2], got {_show(value)}")
    _checked_reaches_image([x1, x2], [y1, y2], field, value, image_size)
    return (*_clipped_point(x1, y1, image_size), *_clipped_point(x2, y2, image_size))


def _checked_arrow(value, field: str, image_size) -> tuple[float, float, float, float]:
    tail_x, tail_y, head_x, head_y = _checked_numbers(value, 4, field, "[x_tail, y_tail, x_head, y_head]")
    _checked_reaches_image([tail_x, head_x], [tail_y, head_y], field, value, image_size)
    xyxy = (*_clipped_point(tail_x, tail_y, image_size), *_clipped_point(head_x, head_y, image_size))
    if xyxy[:2] == xyxy[2:]:
        raise ValueError(f"{field}: expected distinct tail and head inside the image, got {_show(value)}")
    return xyxy


def _checked_scribble(value, field: str, image_size) -> tuple[tuple[float, float], ...]:
    points = _checked_points(value, None, field, image_size)
    if len(set(points)) < 2:
        raise ValueError(f"{field}: expected at least two distinct points inside the image, got {_show(value)}")
    return points


def _checked_mask(value, field: str, image_size: tuple[int, int]) -> np.ndarray:
    width, height = image_size
    if isinstance(value, Image.Image):
        if value.mode not in ("L", "1"):
            raise TypeError(f"{field}: expected an L-mode image, got {_show(value)}")
        if value.size != image_size:
            raise ValueError(f"{field}: expected the image's size {image_size} (width, height), got {_show(value)}")
        mask = np.asarray(value) != 0
    elif isinstance(value, np.ndarray):
        if value.dtype != np.bool_:
            raise TypeError(f"{field}: expected a bool array (use mask.astype(bool)), got {_show(value)}")
        if value.shape != (height, width):
            raise ValueError(f"{field}: expected shape {(height, width)} (height, width), got {_show(value)}")
        mask = value
    else:
        raise TypeError(f"{field}: expected an H×W bool numpy array or an L-mode PIL image, got {_show(value)}")
    if not mask.any():
        raise ValueError(f"{field}: expected a mask with at least one pixel set, got an empty one")
    return mask


_GEOMETRY_CHECKS = {
    "box": _checked_corners,
    "ellipse": _checked_corners,
    "arrow": _checked_arrow,
    "point": _checked_point,
    "scribble": _checked_scribble,
    "triangle": _checked_triangle,
    "mask": _checked_mask,
    "mask_contour": _checked_mask,
}


def _checked_color(value, field: str) -> str | tuple[int, int, int]:
    if isinstance(value, str):
        if value.lower() not in VISUAL_PROMPT_COLORS:
            raise ValueError(f"{field}: expected one of {tuple(VISUAL_PROMPT_COLORS)} or an RGB triple, got {value!r}")
        return value.lower()
    expected = "a colour name or an RGB triple of ints in 0-255"
    if not isinstance(value, (Sequence, np.ndarray)) or len(value) != 3:
        raise TypeError(f"{field}: expected {expected}, got {_show(value)}")
    if not all(_is_int(channel) for channel in value):
        raise TypeError(f"{field}: expected {expected}, got {_show(value)}")
    if not all(0 <= channel <= 255 for channel in value):
        raise ValueError(f"{field}: expected {expected}, got {_show(value)}")
    return tuple(int(channel) for channel in value)


def _checked_alpha(value, field: str) -> float:
    alpha = _checked_number(value, field)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{field}: expected an opacity in [0, 1], got {_show(value)}")
    return alpha


def _checked_size(value, field: str) -> int:
    if not _is_int(value):
        raise TypeError(f"{field}: expected a positive int (pixels), got {_show(value)}")
    if value < 1:
        raise ValueError(f"{field}: expected a positive int (pixels), got {_show(value)}")
    return int(value)


def _checked_label(value, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{field}: expected a str, got {_show(value)}")
    if value is not None and ("\n" in value or "\r" in value):
        raise ValueError(f"{field}: expected a single line of text, got {_show(value)}")
    return value or None


# Drawing. A prompt becomes marks in image pixel coordinates; each mark knows its extent (inclusive box of the pixels
# it may touch) and paints itself onto an overlay whose top-left pixel sits at `origin` in the image.


@dataclass(frozen=True)
class _Stroke:
    kind: str  # "rectangle", "ellipse", "disc", "polyline" or "polygon"
    points: tuple[tuple[int, int], ...]
    width: int = 0

    def extent(self) -> tuple[int, int, int, int]:
        xs, ys = zip(*self.points, strict=True)
        # Wide lines spread half their width around the path (a pixel more at joints); other kinds stay inside.
        margin = self.width // 2 + 2 if self.kind == "polyline" else 0
        return min(xs) - margin, min(ys) - margin, max(xs) + margin, max(ys) + margin

    def paint(self, overlay: Image.Image, origin: tuple[int, int], ink: tuple[int, int, int, int]) -> None:
        points = [(x - origin[0], y - origin[1]) for x, y in self.points]
        draw = ImageDraw.Draw(overlay)
        if self.kind == "rectangle":
            for strip in _rectangle_outline_strips(*points[0], *points[1], self.width):
                draw.rectangle(strip, fill=ink)
        elif self.kind == "ellipse":
            draw.ellipse(points, outline=ink, width=self.width)
        elif self.kind == "disc":
            draw.ellipse(points, fill=ink)
        elif self.kind == "polyline":
            draw.line(points, fill=ink, width=self.width, joint="curve")
        else:
            draw.polygon(points, fill=ink, outline=ink)


def _rectangle_outline_strips(left: int, top: int, right: int, bottom: int, width: int) -> list[tuple[int, ...]]:
    """The four sides of a box, `width` pixels thick inwards, as PIL draws outlines but never beyond the box.

    PIL's own outline overshoots boxes thinner than twice the width.
    """
    return [
        (left, top, right, min(top + width - 1, bottom)),
        (left, max(bottom - width + 1, top), right, bottom),
        (left, top, min(left + width - 1, right), bottom),
        (max(right - width + 1, left), top, right, bottom),
    ]


@dataclass(frozen=True)
class _Bitmap:
    pixels: np.ndarray
    left: int
    top: int

    def extent(self) -> tuple[int, int, int, int]:
        height, width = self.pixels.shape
        return self.left, self.top, self.left + width - 1, self.top + height - 1

    def paint(self, overlay: Image.Image, origin: tuple[int, int], ink: tuple[int, int, int, int]) -> None:
        height, width = self.pixels.shape
        left, top = self.left - origin[0], self.top - origin[1]
        overlay.paste(ink, (left, top, left + width, top + height), Image.fromarray(self.pixels))


@dataclass(frozen=True)
class _Label:
    text: str
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    box: tuple[int, int, int, int]  # the tag behind the text
    text_origin: tuple[int, int]  # where PIL's text anchor goes so the glyphs sit centred in the tag

    def extent(self) -> tuple[int, int, int, int]:
        return self.box

    def paint(self, overlay: Image.Image, origin: tuple[int, int], ink: tuple[int, int, int, int]) -> None:
        left, top, right, bottom = self.box
        draw = ImageDraw.Draw(overlay)
        draw.rectangle((left - origin[0], top - origin[1], right - origin[0], bottom - origin[1]), fill=ink)
        text_position = (self.text_origin[0] - origin[0], self.text_origin[1] - origin[1])
        draw.text(text_position, self.text, fill=_text_color(ink), font=self.font)


def _text_color(ink: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Black or white, whichever reads better on the tag, at the prompt's opacity."""
    red, green, blue, alpha = ink
    is_light = 0.299 * red + 0.587 * green + 0.114 * blue > 150
    return (0, 0, 0, alpha) if is_light else (255, 255, 255, alpha)


def _composite_prompt(canvas: Image.Image, prompt: dict) -> None:
    marks = _prompt_marks(prompt, canvas.size)
    left, top, right, bottom = _union_extent(marks, canvas.size)
    overlay = Image.new("RGBA", (right - left + 1, bottom - top + 1), (0, 0, 0, 0))
    ink = _ink(prompt)
    for mark in marks:
        mark.paint(overlay, (left, top), ink)
    # On an opaque image, pasting through the overlay's alpha gives exactly the pixels of Image.alpha_composite (both
    # round (overlay·α + image·(255 - α)) / 255; checked for every value), without converting to RGBA and back.
    canvas.paste(overlay, (left, top), overlay)


def _prompt_marks(prompt: dict, image_size: tuple[int, int]) -> list:
    marks = _SHAPE_MARKS[prompt["type"]](prompt, image_size)
    if prompt["label"]:
        marks.append(_label_mark(prompt["label"], _union_extent(marks, image_size), image_size))
    return marks


def _ink(prompt: dict) -> tuple[int, int, int, int]:
    color = prompt["color"]
    rgb = VISUAL_PROMPT_COLORS[color] if isinstance(color, str) else color
    return (*rgb, round(prompt["alpha"] * 255))


def _union_extent(marks: list, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    lefts, tops, rights, bottoms = zip(*(mark.extent() for mark in marks), strict=True)
    width, height = image_size
    return max(min(lefts), 0), max(min(tops), 0), min(max(rights), width - 1), min(max(bottoms), height - 1)


def _pixel(point: tuple[float, float]) -> tuple[int, int]:
    return math.floor(point[0] + 0.5), math.floor(point[1] + 0.5)


def _outline_marks(prompt: dict, image_size: tuple[int, int]) -> list:
    corners = (_pixel(prompt["xyxy"][:2]), _pixel(prompt["xyxy"][2:]))
    return [_Stroke("rectangle" if prompt["type"] == "box" else "ellipse", corners, prompt["width"])]


def _point_marks(prompt: dict, image_size: tuple[int, int]) -> list:
    x, y = _pixel(prompt["xy"])
    radius = prompt["radius"]
    return [_Stroke("disc", ((x - radius, y - radius), (x + radius, y + radius)))]


def _triangle_marks(prompt: dict, image_size: tuple[int, int]) -> list:
    corners = tuple(_pixel(point) for point in prompt["points"])
    # Going round to the second corner again gives the first corner the same rounded joint as the others.
    return [_Stroke("polyline", (*corners, *corners[:2]), prompt["width"])]


def _scribble_marks(prompt: dict, image_size: tuple[int, int]) -> list:
    return [_Stroke("polyline", _catmull_rom_path(prompt["points"], prompt["width"]), prompt["width"])]


def _arrow_marks(prompt: dict, image_size: tuple[int, int]) -> list:
    tail_x, tail_y, tip_x, tip_y = prompt["xyxy"]
    width = prompt["width"]
    length = math.hypot(tip_x - tail_x, tip_y - tail_y)
    direction = math.atan2(tip_y - tail_y, tip_x - tail_x)
    head_length = min(max(ARROW_HEAD_LENGTH_RATIO * length, 2 * width), length)
    wings = [
        (tip_x - head_length * math.cos(angle), tip_y - head_length * math.sin(angle))
        for angle in (direction + ARROW_HEAD_HALF_ANGLE, direction - ARROW_HEAD_HALF_ANGLE)
    ]
    # The shaft stops where the head begins so that its square end does not poke out beside the tip.
    head_depth = head_length * math.cos(ARROW_HEAD_HALF_ANGLE)
    shaft_end = (tip_x - head_depth * math.cos(direction), tip_y - head_depth * math.sin(direction))
    shaft = _Stroke("polyline", (_pixel((tail_x, tail_y)), _pixel(shaft_end)), width)
    head = _Stroke("polygon", (_pixel((tip_x, tip_y)), *(_pixel(wing) for wing in wings)))
    return [shaft, head]


def _catmull_rom_path(points: tuple[tuple[float, float], ...], width: int) -> tuple[tuple[int, int], ...]:
    """Pixels of a uniform Catmull-Rom spline through `points`, sampled about every `max(2 * width, 4)` pixels.

    Wide lines get rounded joints, which hide the chords; fewer chords keep PIL's per-joint work small.
    """
    controls = np.asarray(points, dtype=np.float64)
    # Mirrored end points make the curve start and end along its first and last chords.
    controls = np.concatenate([2 * controls[:1] - controls[1:2], controls, 2 * controls[-1:] - controls[-2:-1]])
    path = [controls[1]]
    for first in range(len(controls) - 3):
        p0, p1, p2, p3 = controls[first : first + 4]
        samples = max(math.ceil(np.hypot(*(p2 - p1)) / max(2 * width, 4)), 1)
        t = np.arange(1, samples + 1)[:, None] / samples
        path.extend(
            0.5
            * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        )
    pixels = [_pixel(point) for point in path]
    return tuple(pixel for position, pixel in enumerate(pixels) if position == 0 or pixel != pixels[position - 1])


def _mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    top, bottom = int(rows[0]), int(rows[-1])
    columns = np.flatnonzero(mask[top : bottom + 1].any(axis=0))
    return int(columns[0]), top, int(columns[-1]), bottom


def _mask_marks(prompt: dict, image_size: tuple[int, int]) -> list:
    mask = prompt["mask"]
    left, top, right, bottom = _mask_bounds(mask)
    return [_Bitmap(mask[top : bottom + 1, left : right + 1], left, top)]


def _mask_contour_marks(prompt: dict, image_size: tuple[int, int]) -> list:
    """The band of `width` pixels centred on the mask's boundary (the original redraws its outline at every offset).

    Pixels outside the image count as outside the mask, so a mask cut by the image border is outlined along it.
    """
    mask, width = prompt["mask"], prompt["width"]
    inner, outer = (width + 1) // 2, width // 2
    left, top, right, bottom = _mask_bounds(mask)
    # Work on the mask's bounding box grown by the band, so the result is the same as on the whole image.
    margin = max(inner, outer) + 1
    image_width, image_height = image_size
    left, top = max(left - margin, 0), max(top - margin, 0)
    right, bottom = min(right + margin, image_width - 1), min(bottom + margin, image_height - 1)
    region = mask[top : bottom + 1, left : right + 1]
    grown = _dilated(region, outer, outside=False)
    shrunk = ~_dilated(~region, inner, outside=True)
    return [_Bitmap(grown & ~shrunk, left, top)]


_SHAPE_MARKS = {
    "box": _outline_marks,
    "ellipse": _outline_marks,
    "arrow": _arrow_marks,
    "point": _point_marks,
    "scribble": _scribble_marks,
    "triangle": _triangle_marks,
    "mask": _mask_marks,
    "mask_contour": _mask_contour_marks,
}


def _dilated(mask: np.ndarray, radius: int, outside: bool) -> np.ndarray:
    """Dilation by a (2·radius+1)² square, with pixels beyond the edges taken as `outside`."""
    if radius == 0:
        return mask
    return _dilated_columns(_dilated_columns(mask, radius, outside).T, radius, outside).T


def _dilated_columns(mask: np.ndarray, radius: int, outside: bool) -> np.ndarray:
    """Whether any of the 2·radius+1 rows around each row is set, in O(log radius) passes over the array."""
    window = 2 * radius + 1
    covered = np.pad(mask, ((radius, radius), (0, 0)), constant_values=outside)
    span = 1  # covered[i] tells whether any of rows i .. i + span - 1 of the padded mask is set
    while 2 * span <= window:
        covered = covered[:-span] | covered[span:]
        span *= 2
    # Two windows of `span` rows, one at each end, together cover exactly `window` rows.
    rows = mask.shape[0]
    return covered[:rows] | covered[window - span : window - span + rows]


@functools.lru_cache(maxsize=16)
def _label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size)


def _label_mark(text: str, shape_extent: tuple[int, int, int, int], image_size: tuple[int, int]) -> _Label:
    """A tag just above the shape's top-left corner, or below the shape when there is no room, kept in the image."""
    width, height = image_size
    font_size = max(int(12 * max(image_size) / SIZE_ANCHOR), 10)
    font = _label_font(font_size)
    padding = max(font_size // 6, 1)
    text_left, text_top, text_right, text_bottom = font.getbbox(text)
    tag_width = text_right - text_left + 2 * padding
    tag_height = text_bottom - text_top + 2 * padding
    left, top, _, bottom = shape_extent
    tag_top = top - tag_height if top >= tag_height else bottom + 1
    tag_left = min(max(left, 0), max(width - tag_width, 0))
    tag_top = min(max(tag_top, 0), max(height - tag_height, 0))
    box = (tag_left, tag_top, tag_left + tag_width - 1, tag_top + tag_height - 1)
    return _Label(text, font, box, (tag_left + padding - text_left, tag_top + padding - text_top))
