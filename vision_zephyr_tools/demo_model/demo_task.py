"""The demo model's synthetic task: coloured shapes on a white canvas, one of them marked by a visual prompt.

A white canvas, width and height each between 200 and 800 px, holds 2 to 4 non-overlapping filled shapes (circle,
square or triangle; blue, green, yellow or black; sized 15-30 % of the shorter side; no two share both kind and
colour). Exactly one shape is marked by one visual prompt that the processor draws, and a question asks for the marked
shape's colour, its shape or both; the answer is one word (`yellow`, `circle`) or both (`yellow circle`).

Two variants of the task (`make_case(..., task=...)`):

- `"broad"` (issue 24, what the demo model is trained on): every prompt type the processor draws (box, ellipse, point,
  arrow, scribble, triangle, mask, mask contour) in every named prompt colour (`visual_prompts.VISUAL_PROMPT_COLORS`),
  in a colour no shape in the scene has or resembles; placed the way people place them (loose and tight boxes, points
  off-centre, arrows from any side at various lengths, rough scribbles over or around the shape); the question worded
  in many ways (`question_for`), from a training grammar or from held-out sentence frames the training never uses.
- `"legacy"` (issue 7, the task of the demo checkpoints up to v14): red prompts only (box, ellipse, point on the
  centre, arrow), the questions "What shape is marked?" and "What color is the marked shape?"; kept unchanged so
  its accuracy stays comparable across checkpoints.

    # writes the README's example picture (a legacy case) and prints its prompt (as the chat CLI's flag) and question
    vision-zephyr demo-task --task legacy --seed 12 --save examples/demo.png --save-prompted examples/demo_prompted.png
"""

import argparse
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vision_zephyr_tools.remote_code import load_repo_module


# The prompts' colours and drawing are the root's remote code.
visual_prompts = load_repo_module("visual_prompts")


SHAPE_KINDS = ("circle", "square", "triangle")
SHAPE_COLORS = {"blue": (0, 0, 255), "green": (0, 160, 0), "yellow": (255, 215, 0), "black": (0, 0, 0)}
TASKS = ("broad", "legacy")
PROMPT_TYPES = ("box", "ellipse", "point", "arrow", "scribble", "triangle", "mask", "mask_contour")
LEGACY_PROMPT_TYPES = ("box", "ellipse", "point", "arrow")
PROMPT_COLORS = tuple(visual_prompts.VISUAL_PROMPT_COLORS)
QUESTION_KINDS = ("color", "shape", "both")
# The legacy task's two questions (also sentences of the broad task's training grammar).
QUESTIONS = {"shape": "What shape is marked?", "color": "What color is the marked shape?"}
# A prompt colour closer than this (RGB distance) to a shape colour would pass for that shape's fill (gold is the
# yellow shapes' colour; orange, yellow and lime are near yellow and green), so scenes marked in it have no such shape.
PROMPT_COLOR_CLASH_DISTANCE = 120
CANVAS_SIDES = (200, 800)
SHAPES_PER_IMAGE = (2, 4)
SHAPE_SIZE_FRACTIONS = (0.15, 0.30)
# Room kept free around every shape (as a fraction of its size, plus pixels) so that a box, ellipse or arrow around
# one shape never reaches into another.
CLEARANCE_FRACTION, CLEARANCE_PIXELS = 0.25, 8
PLACEMENT_ATTEMPTS = 200
# Gap between a box or ellipse prompt and its shape, and between an arrow's head and the shape's edge.
PROMPT_MARGIN_FRACTION, PROMPT_MARGIN_MIN = 0.08, 4.0

# The broad task's wording. A question is a frame of its kind filled with a reference to the marked shape; the
# held-out frames share the words of the training grammar but never its sentences ("Tell me ...", "... does ... have",
# "... is which ..." occur only there), so accuracy on them says whether the model reads the question's keywords
# rather than memorised sentences.
MARKING_VERBS = ("marked", "highlighted", "circled", "pointed at", "selected", "indicated")
OBJECT_NOUNS = ("shape", "object", "thing", "one")
# How a reference names the prompt itself: its nouns (never a shape word, which would be an answer) and the words
# that place the shape relative to it.
PROMPT_NOUNS = {
    "box": ("box", "rectangle", "frame"),
    "ellipse": ("ellipse", "oval", "ring"),
    "point": ("dot", "point"),
    "arrow": ("arrow",),
    "scribble": ("scribble", "squiggle"),
    "triangle": ("outline", "frame"),
    "mask": ("mask", "highlight", "overlay"),
    "mask_contour": ("contour", "outline"),
}
PROMPT_RELATIONS = {
    "box": ("in", "inside", "within"),
    "ellipse": ("in", "inside", "within"),
    "point": ("at", "under", "with"),
    "arrow": ("at the tip of", "pointed to by"),
    "scribble": ("under", "with"),
    "triangle": ("in", "inside", "within"),
    "mask": ("under", "with"),
    "mask_contour": ("in", "inside", "within"),
}
TRAINING_FRAMES = {
    "color": (
        "What {colour} is {ref}?",
        "What is the {colour} of {ref}?",
        "Which {colour} is {ref}?",
        "What {colour} is {verb}?",
        "{colour} of {ref}?",
        "What {colour} is the shape {place}?",
        "Name the {colour} of {ref}.",
        "Give the {colour} of {ref}.",
        "Say which {colour} {ref} is.",
        "For {ref}, what {colour} is it?",
        "{ref}: which {colour}?",
        "The {colour} of {ref}, please.",
    ),
    "shape": (
        "What shape is {ref}?",
        "What is the shape of {ref}?",
        "Which shape is {ref}?",
        "What shape is {verb}?",
        "What kind of shape is {ref}?",
        "Shape of {ref}?",
        "What shape is {place}?",
        "Name the shape of {ref}.",
        "Give the shape of {ref}.",
        "Say which shape {ref} is.",
        "For {ref}, what shape is it?",
        "{ref}: which shape?",
        "The shape of {ref}, please.",
    ),
    "both": (
        "What is {verb}?",
        "What is {place}?",
        "What is {marked}?",
        "Describe {marked}.",
        "Which shape and {colour} is {ref}?",
        "Name the {colour} and shape of {ref}.",
        "Identify {ref}.",
        "Say what is {verb}.",
        "For {ref}, what is it?",
        "{ref}: what is it?",
        "{ref} is what?",
        "Give the shape and {colour} of {ref}.",
    ),
}
# Words around a training question that ask nothing ("Please, what colour is ...", "... in this picture"), so the
# model learns to read a question's keywords past words it has not seen.
TRAINING_OPENERS = ("Please, ", "Hey, ", "Quick question: ", "Look at the picture. ", "In this image, ", "Now, ")
TRAINING_CLOSERS = (" in the image", " in this picture", " here")
FILLER_SHARE = 0.3
HELD_OUT_FRAMES = {
    "color": ("Tell me the {colour} of {ref}.", "{ref} is which {colour}?", "What {colour} does {ref} have?"),
    "shape": ("Tell me the shape of {ref}.", "{ref} is which shape?", "What shape does {ref} have?"),
    "both": ("Tell me what is {verb}.", "Tell me what {ref} is.", "What shape and {colour} does {ref} have?"),
}
WORDINGS = ("training", "held-out")
LOWER_CASE_SHARE, NO_QUESTION_MARK_SHARE, PROMPT_COLOR_WORD_SHARE = 0.3, 0.3, 0.5


@dataclass(frozen=True)
class Shape:
    """A filled shape: `size` is the side of its square bounding box, `(x, y)` the box's centre."""

    kind: str
    color: str
    x: float
    y: float
    size: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        half = self.size / 2
        return self.x - half, self.y - half, self.x + half, self.y + half

    @property
    def centre(self) -> tuple[float, float]:
        """The point a `point` prompt marks: the centroid (lower than the box centre for the upright triangle)."""
        if self.kind == "triangle":
            return self.x, self.y + self.size / 6
        return self.x, self.y

    @property
    def keep_out_radius(self) -> float:
        """Radius around `(x, y)` that holds the shape, its prompt and the clearance to its neighbours."""
        return self.size / math.sqrt(2) + CLEARANCE_FRACTION * self.size + CLEARANCE_PIXELS

    def contains(self, x: float, y: float) -> bool:
        left, top, right, bottom = self.xyxy
        if self.kind == "circle":
            return math.hypot(x - self.x, y - self.y) <= self.size / 2
        if not (left <= x <= right and top <= y <= bottom):
            return False
        if self.kind == "square":
            return True
        # Upright triangle: apex at the top centre, base along the bottom edge.
        return abs(x - self.x) <= (y - top) / 2

    def draw(self, draw: ImageDraw.ImageDraw, fill: int | tuple[int, int, int] | None = None) -> None:
        """Fills the shape in its colour (or in `fill`, e.g. 255 on a mask)."""
        fill = SHAPE_COLORS[self.color] if fill is None else fill
        left, top, right, bottom = self.xyxy
        if self.kind == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif self.kind == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        else:
            draw.polygon(((self.x, top), (right, bottom), (left, bottom)), fill=fill)


@dataclass(frozen=True)
class DemoCase:
    """One question about one scene: the clean image, the prompt that marks the target and the expected answer.

    `wording` says where the question comes from: `"legacy"` (the legacy task's two questions), `"training"` (the
    broad task's training grammar) or `"held-out"` (sentence frames never used in training).
    """

    image: Image.Image
    shapes: tuple[Shape, ...]
    target: Shape
    visual_prompt: dict
    question_kind: str
    question: str
    answer: str
    wording: str = "legacy"

    @property
    def prompt_type(self) -> str:
        return self.visual_prompt["type"]

    @property
    def prompt_color(self) -> str:
        return self.visual_prompt.get("color", "red")


def answer_for(target: Shape, question_kind: str) -> str:
    """The expected answer: the marked shape's colour, its kind, or both (`"yellow circle"`)."""
    return {"color": target.color, "shape": target.kind, "both": f"{target.color} {target.kind}"}[question_kind]


def question_kind_of(answer: str) -> str:
    """The kind of question `answer` answers (`answer_for`'s inverse): `"yellow circle"` -> `"both"`."""
    if " " in answer:
        return "both"
    return "shape" if answer in SHAPE_KINDS else "color"


def sample_shapes(
    rng: random.Random,
    width: int,
    height: int,
    shapes_per_image: tuple[int, int] = SHAPES_PER_IMAGE,
    size_fractions: tuple[float, float] = SHAPE_SIZE_FRACTIONS,
    colors: tuple[str, ...] = tuple(SHAPE_COLORS),
) -> tuple[Shape, ...]:
    """2-4 shapes (or `shapes_per_image`) in `colors` with distinct (kind, colour) whose keep-out discs do not overlap
    and stay inside the canvas."""
    while True:
        count = rng.randint(*shapes_per_image)
        styles = rng.sample([(kind, color) for kind in SHAPE_KINDS for color in colors], count)
        shapes: list[Shape] = []
        for kind, color in styles:
            shape = _place_shape(rng, kind, color, width, height, shapes, size_fractions)
            if shape is None:
                break
            shapes.append(shape)
        else:
            return tuple(shapes)


def _place_shape(
    rng: random.Random,
    kind: str,
    color: str,
    width: int,
    height: int,
    placed: list[Shape],
    size_fractions: tuple[float, float],
) -> Shape | None:
    size = rng.uniform(*size_fractions) * min(width, height)
    # Box and ellipse prompts around the shape stay inside the canvas.
    border = size / math.sqrt(2) + PROMPT_MARGIN_FRACTION * size + 4
    for _ in range(PLACEMENT_ATTEMPTS):
        shape = Shape(kind, color, rng.uniform(border, width - border), rng.uniform(border, height - border), size)
        if all(math.dist((shape.x, shape.y), (other.x, other.y)) > _min_gap(shape, other) for other in placed):
            return shape
    return None


def _min_gap(first: Shape, second: Shape) -> float:
    return max(first.keep_out_radius + second.size / math.sqrt(2), second.keep_out_radius + first.size / math.sqrt(2))


def shape_colors_beside(prompt_color: str) -> tuple[str, ...]:
    """The shape colours a scene marked in `prompt_color` may hold: those the prompt's colour cannot pass for."""
    ink = visual_prompts.VISUAL_PROMPT_COLORS[prompt_color]
    return tuple(name for name, rgb in SHAPE_COLORS.items() if math.dist(ink, rgb) >= PROMPT_COLOR_CLASH_DISTANCE)


def visual_prompt_for(rng: random.Random, prompt_type: str, target: Shape, shapes, image_size) -> dict | None:
    """The legacy task's red prompt of `prompt_type` marking `target`, in the processor's dict format (`None` if an
    arrow has no room)."""
    margin = max(PROMPT_MARGIN_MIN, PROMPT_MARGIN_FRACTION * target.size)
    left, top, right, bottom = target.xyxy
    if prompt_type == "box":
        return {"type": "box", "xyxy": [left - margin, top - margin, right + margin, bottom + margin]}
    if prompt_type == "ellipse":
        # A circle's box already holds it; squares and triangles need the ellipse through their bounding box corners.
        half = target.size / 2 if target.kind == "circle" else target.size / math.sqrt(2)
        radius = half + margin
        return {
            "type": "ellipse",
            "xyxy": [target.x - radius, target.y - radius, target.x + radius, target.y + radius],
        }
    if prompt_type == "point":
        return {"type": "point", "xy": list(target.centre)}
    return _arrow_prompt(rng, target, shapes, image_size, margin, (target.x, target.y), (0.6, 1.2))


def human_prompt_for(rng: random.Random, prompt_type: str, target: Shape, shapes, image_size) -> dict | None:
    """A prompt of `prompt_type` marking `target` the way a person places one (`None` when it has no room).

    Every mark stays within `target.keep_out_radius` of its centre except the arrow's and the triangle's, which are
    checked against the other shapes, so a prompt never touches another shape.
    """
    size = target.size
    left, top, right, bottom = target.xyxy
    if prompt_type == "box":
        # Loose or tight, each side on its own; at most 0.17 of the size, so the corners stay in the keep-out disc.
        lm, tm, rm, bm = (rng.uniform(0.01, 0.17) * size + 2 for _ in range(4))
        return {"type": "box", "xyxy": [left - lm, top - tm, right + rm, bottom + bm]}
    if prompt_type == "ellipse":
        half = size / 2 if target.kind == "circle" else size / math.sqrt(2)
        shift_x, shift_y = (rng.uniform(-0.03, 0.03) * size for _ in range(2))
        rx, ry = (half + 0.03 * size + rng.uniform(0.01, 0.15) * size for _ in range(2))
        x, y = target.x + shift_x, target.y + shift_y
        return {"type": "ellipse", "xyxy": [x - rx, y - ry, x + rx, y + ry]}
    if prompt_type == "point":
        return {"type": "point", "xy": list(_point_on(rng, target))}
    if prompt_type == "arrow":
        gap = rng.uniform(0.02, 0.25) * size
        return _arrow_prompt(rng, target, shapes, image_size, gap, _point_on(rng, target), (0.5, 2.0))
    if prompt_type == "scribble":
        return {"type": "scribble", "points": _scribble_points(rng, target)}
    if prompt_type == "triangle":
        return _triangle_prompt(rng, target, shapes, image_size)
    # Masks as a segmenter or a brush gives them: the shape's silhouette, grown by a few pixels.
    grow = rng.randint(0, 3) if prompt_type == "mask" else rng.randint(1, 6)
    return {"type": prompt_type, "mask": _silhouette(target, image_size, grow)}


def _point_on(rng: random.Random, target: Shape) -> tuple[float, float]:
    """A point well inside `target`, anywhere rather than on its centroid (a person taps the shape, not its centre)."""
    x, y = target.centre
    inset = 0.08 * target.size
    for _ in range(PLACEMENT_ATTEMPTS):
        candidate = (x + rng.uniform(-0.3, 0.3) * target.size, y + rng.uniform(-0.3, 0.3) * target.size)
        around = [
            (candidate[0] + dx, candidate[1] + dy) for dx, dy in ((inset, 0), (-inset, 0), (0, inset), (0, -inset))
        ]
        if all(target.contains(*point) for point in around):
            return candidate
    return x, y


def _arrow_prompt(
    rng: random.Random,
    target: Shape,
    shapes,
    image_size,
    gap: float,
    aim: tuple[float, float],
    lengths: tuple[float, float],
) -> dict | None:
    """An arrow from outside whose head stops `gap` px short of the target's edge, on a line through `aim`, with a
    length of `lengths` times the target's size."""
    width, height = image_size
    others = [shape for shape in shapes if shape is not target]
    for _ in range(PLACEMENT_ATTEMPTS):
        angle = rng.uniform(0, 2 * math.pi)
        dx, dy = math.cos(angle), math.sin(angle)
        reach = _edge_distance(target, aim, dx, dy) + gap
        length = rng.uniform(*lengths) * target.size
        head = (aim[0] + reach * dx, aim[1] + reach * dy)
        tail = (head[0] + length * dx, head[1] + length * dy)
        inside = all(0 <= value <= limit for value, limit in zip((*head, *tail), (width, height) * 2, strict=True))
        clear = all(_segment_clear_of(head, tail, shape) for shape in others)
        if inside and clear:
            return {"type": "arrow", "xyxy": [tail[0], tail[1], head[0], head[1]]}
    return None


def _edge_distance(shape: Shape, start: tuple[float, float], dx: float, dy: float) -> float:
    distance = 0.0
    while shape.contains(start[0] + distance * dx, start[1] + distance * dy):
        distance += 1.0
    return distance


def _segment_clear_of(start, end, shape: Shape) -> bool:
    """True when the segment passes no closer to `shape`'s centre than its keep-out radius."""
    (x1, y1), (x2, y2) = start, end
    length_sq = (x2 - x1) ** 2 + (y2 - y1) ** 2
    t = max(0.0, min(1.0, ((shape.x - x1) * (x2 - x1) + (shape.y - y1) * (y2 - y1)) / length_sq))
    return math.dist((x1 + t * (x2 - x1), y1 + t * (y2 - y1)), (shape.x, shape.y)) > shape.keep_out_radius


def _scribble_points(rng: random.Random, target: Shape) -> list[list[float]]:
    """A rough scribble: a zigzag across the shape or a wobbly loop around it."""
    x, y = target.centre
    size = target.size
    if rng.random() < 0.5:
        count = rng.randint(4, 7)
        spread = rng.uniform(0.2, 0.35) * size
        return [[x + rng.uniform(-spread, spread), y + rng.uniform(-spread, spread)] for _ in range(count)]
    half = size / 2 if target.kind == "circle" else size / math.sqrt(2)
    start, turn = rng.uniform(0, 2 * math.pi), rng.uniform(1.6, 2.2) * math.pi
    count = rng.randint(6, 10)
    points = []
    for index in range(count):
        angle = start + turn * index / (count - 1)
        radius = half + rng.uniform(0.04, 0.2) * size
        points.append([target.x + radius * math.cos(angle), target.y + radius * math.sin(angle)])
    return points


def _triangle_prompt(rng: random.Random, target: Shape, shapes, image_size) -> dict | None:
    """A triangle drawn around the shape: its sides clear the shape's enclosing circle, its corners stay inside the
    canvas and its sides away from the other shapes."""
    width, height = image_size
    others = [shape for shape in shapes if shape is not target]
    x, y = target.centre
    # Radius of a circle about the centroid that holds the shape (an upright triangle's apex is 2/3 of its size away).
    enclosing = {"circle": 0.5, "square": 1 / math.sqrt(2), "triangle": 2 / 3}[target.kind] * target.size
    for _ in range(PLACEMENT_ATTEMPTS // 4):
        inradius = enclosing + rng.uniform(0.03, 0.15) * target.size
        # Upright most of the time, as people draw them, otherwise turned any way.
        turn = rng.uniform(-0.3, 0.3) if rng.random() < 0.6 else rng.uniform(0, 2 * math.pi / 3)
        corners = [
            (
                x + 2 * inradius * math.sin(turn + k * 2 * math.pi / 3),
                y - 2 * inradius * math.cos(turn + k * 2 * math.pi / 3),
            )
            for k in range(3)
        ]
        inside = all(0 <= cx <= width and 0 <= cy <= height for cx, cy in corners)
        sides = list(zip(corners, corners[1:] + corners[:1], strict=True))
        if inside and all(_segment_clear_of(a, b, shape) for a, b in sides for shape in others):
            return {"type": "triangle", "points": [list(corner) for corner in corners]}
    return None


def _silhouette(target: Shape, image_size, grow: int) -> np.ndarray:
    """`target`'s filled outline as an H×W bool mask, dilated by `grow` pixels (a square window, as PIL's
    `MaxFilter(2 * grow + 1)`, whose full-image pass cost a quarter of a training batch's drawing)."""
    canvas = Image.new("L", image_size, 0)
    target.draw(ImageDraw.Draw(canvas), fill=255)
    return dilated(np.asarray(canvas) > 0, grow)


def dilated(mask: np.ndarray, grow: int) -> np.ndarray:
    """`mask` grown by `grow` pixels in a square window: a running maximum along each axis in turn."""
    for axis in (0, 1):
        grown = mask.copy()
        moving = np.moveaxis(grown, axis, 0)
        source = np.moveaxis(mask, axis, 0)
        for shift in range(1, grow + 1):
            moving[shift:] |= source[:-shift]
            moving[:-shift] |= source[shift:]
        mask = grown
    return mask


def question_for(rng: random.Random, question_kind: str, visual_prompt: dict, wording: str = "training") -> str:
    """A question of `question_kind` about the shape `visual_prompt` marks, in a wording drawn from the training
    grammar (`"training"`) or the held-out frames (`"held-out"`): "What colour is the shape in the red box?",
    "which shape is pointed at", "Describe the highlighted object."."""
    frames = (TRAINING_FRAMES if wording == "training" else HELD_OUT_FRAMES)[question_kind]
    prompt_type = visual_prompt["type"]
    color_word = f"{visual_prompt.get('color', 'red')} " if rng.random() < PROMPT_COLOR_WORD_SHARE else ""
    place = f"{rng.choice(PROMPT_RELATIONS[prompt_type])} the {color_word}{rng.choice(PROMPT_NOUNS[prompt_type])}"
    verb, noun = rng.choice(MARKING_VERBS), rng.choice(OBJECT_NOUNS)
    # "the marked shape", but "the shape pointed at"
    marked = f"the {noun} {verb}" if " " in verb else f"the {verb} {noun}"
    ref = marked if rng.random() < 0.5 else f"the {noun} {place}"
    text = rng.choice(frames).format(
        colour=rng.choice(("colour", "color")), ref=ref, verb=verb, marked=marked, place=place
    )
    if wording == "training":
        text = with_filler_words(rng, text)
    text = text[0].upper() + text[1:]
    if rng.random() < LOWER_CASE_SHARE:
        text = text.lower()
    if rng.random() < NO_QUESTION_MARK_SHARE:
        text = text.rstrip("?.")
    return text


def with_filler_words(rng: random.Random, question: str) -> str:
    """`question` with, each at `FILLER_SHARE`, an opener before it and a closer before its final mark."""
    if rng.random() < FILLER_SHARE:
        question = rng.choice(TRAINING_OPENERS) + question[0].lower() + question[1:]
    if rng.random() < FILLER_SHARE:
        stem, mark = (question[:-1], question[-1]) if question.endswith(("?", ".")) else (question, "")
        question = stem + rng.choice(TRAINING_CLOSERS) + mark
    return question


def render_scene(width: int, height: int, shapes: tuple[Shape, ...]) -> Image.Image:
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        shape.draw(draw)
    return image


def make_case(
    rng: random.Random,
    shapes_per_image: tuple[int, int] = SHAPES_PER_IMAGE,
    size_fractions: tuple[float, float] = SHAPE_SIZE_FRACTIONS,
    task: str = "broad",
    held_out_share: float = 0.0,
    prompt_type_weights: dict[str, float] | None = None,
) -> DemoCase:
    """One fresh case of `task` drawn from `rng`: scene, marked shape, prompt type and colour, question kind all
    uniform; the question in a held-out wording with probability `held_out_share` (broad task only).
    `prompt_type_weights` (type -> relative weight, 1 for types it leaves out) draws the broad task's prompt types
    unevenly, for training only.

    `shapes_per_image` and `size_fractions` other than the task's (2-4 shapes, 15-30 % of the shorter side) are only
    for training curricula and experiments (e.g. single-shape warm-up scenes, big shapes).
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if task == "legacy":
        return _legacy_case(rng, shapes_per_image, size_fractions)
    while True:
        width, height = rng.randint(*CANVAS_SIDES), rng.randint(*CANVAS_SIDES)
        prompt_type, prompt_color = prompt_type_from(rng, prompt_type_weights), rng.choice(PROMPT_COLORS)
        colors = shape_colors_beside(prompt_color)
        shapes = sample_shapes(rng, width, height, shapes_per_image, size_fractions, colors)
        target = rng.choice(shapes)
        visual_prompt = human_prompt_for(rng, prompt_type, target, shapes, (width, height))
        if visual_prompt is not None:
            break
    visual_prompt["color"] = prompt_color
    question_kind = rng.choice(QUESTION_KINDS)
    wording = "held-out" if rng.random() < held_out_share else "training"
    return DemoCase(
        image=render_scene(width, height, shapes),
        shapes=shapes,
        target=target,
        visual_prompt=visual_prompt,
        question_kind=question_kind,
        question=question_for(rng, question_kind, visual_prompt, wording),
        answer=answer_for(target, question_kind),
        wording=wording,
    )


def prompt_type_from(rng: random.Random, weights: dict[str, float] | None) -> str:
    """A prompt type drawn by `weights`; without them uniform, by the same draw as before they existed, so recipes
    without weights keep their data."""
    if weights is None:
        return rng.choice(PROMPT_TYPES)
    return rng.choices(PROMPT_TYPES, [weights.get(prompt_type, 1.0) for prompt_type in PROMPT_TYPES])[0]


def _legacy_case(
    rng: random.Random, shapes_per_image: tuple[int, int], size_fractions: tuple[float, float]
) -> DemoCase:
    while True:
        width, height = rng.randint(*CANVAS_SIDES), rng.randint(*CANVAS_SIDES)
        shapes = sample_shapes(rng, width, height, shapes_per_image, size_fractions)
        target = rng.choice(shapes)
        visual_prompt = visual_prompt_for(rng, rng.choice(LEGACY_PROMPT_TYPES), target, shapes, (width, height))
        if visual_prompt is not None:
            break
    question_kind = rng.choice(sorted(QUESTIONS))
    return DemoCase(
        image=render_scene(width, height, shapes),
        shapes=shapes,
        target=target,
        visual_prompt=visual_prompt,
        question_kind=question_kind,
        question=QUESTIONS[question_kind],
        answer=answer_for(target, question_kind),
    )


def other_question(rng: random.Random, case: DemoCase) -> tuple[str, str]:
    """A second question about `case`'s marked shape, of another kind, and its answer (training wording)."""
    if case.wording == "legacy":
        kind = next(kind for kind in QUESTIONS if kind != case.question_kind)
        return QUESTIONS[kind], answer_for(case.target, kind)
    kind = rng.choice([kind for kind in QUESTION_KINDS if kind != case.question_kind])
    return question_for(rng, kind, case.visual_prompt), answer_for(case.target, kind)


def make_cases(count: int, seed: int, task: str = "broad", held_out_share: float = 0.0) -> list[DemoCase]:
    """`count` cases from one seeded generator: the same seed always gives the same cases."""
    rng = random.Random(seed)
    return [make_case(rng, task=task, held_out_share=held_out_share) for _ in range(count)]


def rounded_prompt(prompt: dict) -> dict:
    """The prompt with whole-pixel coordinates (the drawing rounds them the same way), as a user would type them."""
    if prompt["type"] in ("mask", "mask_contour"):
        return dict(prompt)
    if prompt["type"] in ("scribble", "triangle"):
        return {**prompt, "points": [[round(value) for value in point] for point in prompt["points"]]}
    key = "xy" if prompt["type"] == "point" else "xyxy"
    return {**prompt, key: [round(value) for value in prompt[key]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the case")
    parser.add_argument("--task", choices=TASKS, default="broad", help="the broad task or the legacy one")
    parser.add_argument("--save", type=Path, help="write the clean image (no prompt drawn) here")
    parser.add_argument("--save-prompted", type=Path, help="write the image with its prompt drawn here")
    args = parser.parse_args()
    case = make_cases(1, args.seed, args.task)[0]
    prompt = rounded_prompt(case.visual_prompt)
    if args.save:
        case.image.save(args.save)
    if args.save_prompted:
        visual_prompts.draw_visual_prompts(case.image, [prompt]).save(args.save_prompted)
    print(f"image {case.image.size[0]}x{case.image.size[1]}, shapes {[(s.kind, s.color) for s in case.shapes]}")
    print(f"{describe_flag(prompt)} {case.question!r} -> {case.answer}")


def describe_flag(prompt: dict) -> str:
    """The prompt as the chat CLI's flags (a mask as its pixel count: the CLI takes masks as image files)."""
    color = f" --color {prompt['color']}" if "color" in prompt else ""
    if "mask" in prompt:
        return f"{prompt['type']} of {int(prompt['mask'].sum())} px{color}"
    values = prompt.get("xyxy") or prompt.get("xy") or [value for point in prompt["points"] for value in point]
    return f"--{prompt['type']} {','.join(str(value) for value in values)}{color}"


if __name__ == "__main__":
    main()
