"""The demo model's synthetic task: coloured shapes on a white canvas, one of them marked by a red visual prompt.

The task is fixed (issue 7) so that anyone can generate fresh cases from its description: a white canvas, width and
height each between 200 and 800 px, holds 2 to 4 non-overlapping filled shapes (circle, square or triangle; blue,
green, yellow or black; sized 15-30 % of the shorter side; no two share both kind and colour). Exactly one shape is
marked by one red visual prompt that the processor draws: a box or an ellipse around it, a point on its centre, or an
arrow pointing at it from outside. The question asks for the marked shape's kind or colour; the answer is one word.

    # writes the example picture and prints its prompt (as the chat CLI's flag), question and answer
    vision-zephyr demo-task --seed 12 --save examples/demo.png --save-prompted examples/demo_prompted.png
"""

import argparse
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw


SHAPE_KINDS = ("circle", "square", "triangle")
SHAPE_COLORS = {"blue": (0, 0, 255), "green": (0, 160, 0), "yellow": (255, 215, 0), "black": (0, 0, 0)}
PROMPT_TYPES = ("box", "ellipse", "point", "arrow")
QUESTIONS = {"shape": "What shape is marked?", "color": "What color is the marked shape?"}
CANVAS_SIDES = (200, 800)
SHAPES_PER_IMAGE = (2, 4)
SHAPE_SIZE_FRACTIONS = (0.15, 0.30)
# Room kept free around every shape (as a fraction of its size, plus pixels) so that a box, ellipse or arrow around
# one shape never reaches into another.
CLEARANCE_FRACTION, CLEARANCE_PIXELS = 0.25, 8
PLACEMENT_ATTEMPTS = 200
# Gap between a box or ellipse prompt and its shape, and between an arrow's head and the shape's edge.
PROMPT_MARGIN_FRACTION, PROMPT_MARGIN_MIN = 0.08, 4.0


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

    def draw(self, draw: ImageDraw.ImageDraw) -> None:
        fill = SHAPE_COLORS[self.color]
        left, top, right, bottom = self.xyxy
        if self.kind == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif self.kind == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        else:
            draw.polygon(((self.x, top), (right, bottom), (left, bottom)), fill=fill)


@dataclass(frozen=True)
class DemoCase:
    """One question about one scene: the clean image, the prompt that marks the target and the expected answer."""

    image: Image.Image
    shapes: tuple[Shape, ...]
    target: Shape
    visual_prompt: dict
    question_kind: str
    question: str
    answer: str

    @property
    def prompt_type(self) -> str:
        return self.visual_prompt["type"]


def sample_shapes(
    rng: random.Random,
    width: int,
    height: int,
    shapes_per_image: tuple[int, int] = SHAPES_PER_IMAGE,
    size_fractions: tuple[float, float] = SHAPE_SIZE_FRACTIONS,
) -> tuple[Shape, ...]:
    """2-4 shapes (or `shapes_per_image`) with distinct (kind, colour) whose keep-out discs do not overlap and stay
    inside the canvas."""
    while True:
        count = rng.randint(*shapes_per_image)
        styles = rng.sample([(kind, color) for kind in SHAPE_KINDS for color in SHAPE_COLORS], count)
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


def visual_prompt_for(rng: random.Random, prompt_type: str, target: Shape, shapes, image_size) -> dict | None:
    """The red prompt of `prompt_type` marking `target`, in the processor's dict format (`None` if an arrow has no
    room)."""
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
    return _arrow_prompt(rng, target, shapes, image_size, margin)


def _arrow_prompt(rng: random.Random, target: Shape, shapes, image_size, gap: float) -> dict | None:
    """An arrow from outside whose head stops `gap` px short of the target's edge, on a line through its centre."""
    width, height = image_size
    others = [shape for shape in shapes if shape is not target]
    for _ in range(PLACEMENT_ATTEMPTS):
        angle = rng.uniform(0, 2 * math.pi)
        dx, dy = math.cos(angle), math.sin(angle)
        reach = _edge_distance(target, dx, dy) + gap
        length = rng.uniform(0.6, 1.2) * target.size
        head = (target.x + reach * dx, target.y + reach * dy)
        tail = (head[0] + length * dx, head[1] + length * dy)
        inside = all(0 <= value <= limit for value, limit in zip((*head, *tail), (width, height) * 2, strict=True))
        clear = all(_segment_clear_of(head, tail, shape) for shape in others)
        if inside and clear:
            return {"type": "arrow", "xyxy": [tail[0], tail[1], head[0], head[1]]}
    return None


def _edge_distance(shape: Shape, dx: float, dy: float) -> float:
    distance = 0.0
    while shape.contains(shape.x + distance * dx, shape.y + distance * dy):
        distance += 1.0
    return distance


def _segment_clear_of(start, end, shape: Shape) -> bool:
    """True when the segment passes no closer to `shape`'s centre than its keep-out radius."""
    (x1, y1), (x2, y2) = start, end
    length_sq = (x2 - x1) ** 2 + (y2 - y1) ** 2
    t = max(0.0, min(1.0, ((shape.x - x1) * (x2 - x1) + (shape.y - y1) * (y2 - y1)) / length_sq))
    return math.dist((x1 + t * (x2 - x1), y1 + t * (y2 - y1)), (shape.x, shape.y)) > shape.keep_out_radius


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
) -> DemoCase:
    """One fresh case drawn from `rng`: scene, marked shape, prompt type and question all uniform.

    `shapes_per_image` and `size_fractions` other than the task's (2-4 shapes, 15-30 % of the shorter side) are only
    for training curricula and experiments (e.g. single-shape warm-up scenes, big shapes).
    """
    while True:
        width, height = rng.randint(*CANVAS_SIDES), rng.randint(*CANVAS_SIDES)
        shapes = sample_shapes(rng, width, height, shapes_per_image, size_fractions)
        target = rng.choice(shapes)
        visual_prompt = visual_prompt_for(rng, rng.choice(PROMPT_TYPES), target, shapes, (width, height))
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
        answer=target.kind if question_kind == "shape" else target.color,
    )


def make_cases(count: int, seed: int) -> list[DemoCase]:
    """`count` cases from one seeded generator: the same seed always gives the same cases."""
    rng = random.Random(seed)
    return [make_case(rng) for _ in range(count)]


def rounded_prompt(prompt: dict) -> dict:
    """The prompt with whole-pixel coordinates (the drawing rounds them the same way), as a user would type them."""
    key = "xy" if prompt["type"] == "point" else "xyxy"
    return {**prompt, key: [round(value) for value in prompt[key]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the case")
    parser.add_argument("--save", type=Path, help="write the clean image (no prompt drawn) here")
    parser.add_argument("--save-prompted", type=Path, help="write the image with its prompt drawn here")
    args = parser.parse_args()
    case = make_cases(1, args.seed)[0]
    prompt = rounded_prompt(case.visual_prompt)
    if args.save:
        case.image.save(args.save)
    if args.save_prompted:
        # Imported here: the task itself draws nothing; the drawing is the root's remote code.
        from vision_zephyr_tools.remote_code import load_repo_module

        load_repo_module("visual_prompts").draw_visual_prompts(case.image, [prompt]).save(args.save_prompted)
    flag_value = ",".join(str(value) for value in prompt.get("xyxy", prompt.get("xy")))
    print(f"image {case.image.size[0]}x{case.image.size[1]}, shapes {[(s.kind, s.color) for s in case.shapes]}")
    print(f"--{prompt['type']} {flag_value} {case.question!r} -> {case.answer}")


if __name__ == "__main__":
    main()
