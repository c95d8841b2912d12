"""VCR annotations as visually-prompted questions, the way the original Vision-Zephyr drew and worded them.

A VCR record (a line of `train.jsonl` / `val.jsonl`) names objects by index inside its token lists, e.g.
`["Why", "is", [0], "pointing", "at", [1, 2], "?"]`, and its metadata file has a box and segmentation polygons per
object. Every referenced object gets a shape and a colour, is drawn as a visual prompt (processor format, see
`visual_prompts.py`) and is written as "the person at the red point" in the text:

- Evaluation (`qa`: question -> answer, `qar`: question + answer -> rationale) marks objects with points (radius
  `max(int(8 s), 1)`, `s = max(w, h) / 336`, opacity 128/255) sampled around the object's centre inside its mask,
  and asks the original's multiple-choice prompts; the target is the letter of the right choice.
- Training (`train`) draws a random shape per object among rectangle, ellipse, triangle, scribble, mask contour,
  mask and arrow with the original's random sizes and opacities, calls objects "object"/"instance" half the time,
  and chats Q -> A, then why -> rationale, both multiple choice with letter answers (a simplification: the original
  also mixed in free-form answers with randomly chosen prefixes and answer templates).

Colours follow the original: a shape used for several objects gets a distinct named colour per object; a shape used
once gets a named colour half the time, else a random RGB colour that the text does not name. All randomness comes
from `random.Random(f"{seed}:{record id}")`, so a record converts the same way whatever the order or batch.
"""

import json
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vision_zephyr_tools.remote_code import load_repo_module


visual_prompts = load_repo_module("visual_prompts")
SHAPE_PHRASES, SIZE_ANCHOR, VISUAL_PROMPT_COLORS = (
    visual_prompts.SHAPE_PHRASES,
    visual_prompts.SIZE_ANCHOR,
    visual_prompts.VISUAL_PROMPT_COLORS,
)


LETTERS = "ABCD"
TRAIN_SHAPES = ("box", "ellipse", "triangle", "scribble", "mask_contour", "mask", "arrow")
EVAL_SHAPES = ("point",)
EVAL_ALPHA = 128 / 255
MODES = ("qa", "qar", "train")
PUNCTUATION = {".", ",", "?", "!", ":", ";"}
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
QAR_REQUEST = (
    "I give you a question and its answer, I need you to provide a rationale explaining why the answer is right."
)
# Keys of the VCR release first, then of the original's converted files.
RECORD_KEYS = {
    "id": ("annot_id", "id"),
    "image": ("img_fn", "image"),
    "metadata": ("metadata_fn", "meta_dir"),
    "names": ("objects", "class_names"),
}


@dataclass
class VcrObject:
    """One object of a VCR image: box `[x1, y1, x2, y2]`, polygons of `[x, y]` points, class name."""

    box: tuple[float, float, float, float]
    polygons: list[list[tuple[float, float]]]
    name: str


@dataclass
class VcrQuestion:
    """A converted record: the user text (without `<image>`), its visual prompts, and the turns' target letters."""

    question_id: str
    image_path: str
    text: str
    visual_prompts: list[dict[str, Any]]
    answer: str | None
    follow_up: str | None = None
    follow_up_answer: str | None = None


def record_value(record: Mapping[str, Any], key: str, index: int) -> Any:
    for name in RECORD_KEYS[key]:
        if name in record:
            return record[name]
    raise ValueError(f"record {index}: missing {' or '.join(repr(name) for name in RECORD_KEYS[key])}")


def load_annotations(path: str | Path) -> list[dict[str, Any]]:
    """Reads a VCR JSONL file (or a JSON list) and checks the keys every conversion needs."""
    text = Path(path).read_text(encoding="utf-8")
    records = (
        json.loads(text)
        if text.lstrip().startswith("[")
        else [json.loads(line) for line in text.splitlines() if line.strip()]
    )
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"record {index}: expected a dict, got {type(record).__name__}")
        for key in RECORD_KEYS:
            record_value(record, key, index)
        for key in ("question", "answer_choices", "rationale_choices"):
            if not isinstance(record.get(key), list):
                raise ValueError(f"record {index}[{key!r}]: expected a list of tokens, got {record.get(key)!r:.80}")
        for key in ("answer_choices", "rationale_choices"):
            if len(record[key]) != len(LETTERS):
                raise ValueError(f"record {index}[{key!r}]: expected {len(LETTERS)} choices, got {len(record[key])}")
    return records


def load_objects(metadata_path: str | Path, names: Sequence[str]) -> tuple[list[VcrObject], tuple[int, int]]:
    """The objects of a VCR metadata file and the image size `(width, height)`."""
    metadata = json.loads(Path(metadata_path).read_text(encoding="utf-8"))
    objects = []
    for index, name in enumerate(names):
        box = tuple(float(value) for value in metadata["boxes"][index][:4])  # the fifth value is a detector score
        # As the original: polygons of at least 4 points, last first.
        polygons = [
            [(float(x), float(y)) for x, y in polygon]
            for polygon in reversed(metadata["segms"][index])
            if len(polygon) >= 4
        ]
        objects.append(VcrObject(box=box, polygons=polygons, name=name))
    return objects, (int(metadata["width"]), int(metadata["height"]))


def referenced_objects(token_lists: Sequence[Sequence[Any]]) -> list[int]:
    return sorted({index for tokens in token_lists for token in tokens if isinstance(token, list) for index in token})


def assign_styles(
    objects: list[int], shapes: Sequence[str], rng: random.Random
) -> dict[int, tuple[str | None, Any, str]]:
    """`{object: (colour name or None, colour, shape)}` by the original's rule (see the module docstring)."""
    chosen = [rng.choice(shapes) for _ in objects]
    repeated = {shape for shape, count in Counter(chosen).items() if count > 1}
    used: dict[str, list[str]] = {}
    styles = {}
    for index, shape in zip(objects, chosen, strict=True):
        taken = used.setdefault(shape, [])
        if shape in repeated or taken:
            free = [name for name in VISUAL_PROMPT_COLORS if name not in taken]
            name = rng.choice(free) if free else None
        else:
            name = rng.choice(list(VISUAL_PROMPT_COLORS)) if rng.random() < 0.5 else None
        if name is not None:
            taken.append(name)
        color = name if name is not None else tuple(rng.randint(0, 255) for _ in range(3))
        styles[index] = (name, color, shape)
    return styles


def render_tokens(
    tokens: Sequence[Any], styles: Mapping[int, tuple], names: Sequence[str], rng: random.Random, training: bool
) -> str:
    """VCR tokens as text, objects as "the person at the red point" ("The ..." when the text starts with one)."""
    text = ""
    for position, token in enumerate(tokens):
        if isinstance(token, list):
            for number, index in enumerate(token):
                text += "The " if position == 0 and number == 0 else " the "
                noun = rng.choice(["object", "instance"]) if training and rng.random() < 0.5 else names[index]
                color_name, _, shape = styles[index]
                preposition, shape_word = SHAPE_PHRASES[shape]
                article = "the " if rng.random() < 0.5 else ""
                color_word = f"{color_name} " if color_name else ""
                text += f"{noun} {preposition} {article}{color_word}{shape_word}"
                text += " and" if number < len(token) - 1 else ""
        else:
            text += str(token)
        following = tokens[position + 1] if position + 1 < len(tokens) else None
        if isinstance(following, str) and following not in PUNCTUATION:
            text += " "
    return text


def multiple_choice(question: str, options: Sequence[str]) -> str:
    lines = [f"{LETTERS[index]}. {option}" for index, option in enumerate(options)]
    return "\n".join([question, *lines, MC_INSTRUCTION])


def object_mask(obj: VcrObject, image_size: tuple[int, int]) -> np.ndarray:
    """The object's polygons (its box when it has none) rasterised at the image size."""
    canvas = Image.new("L", image_size, 0)
    draw = ImageDraw.Draw(canvas)
    x1, y1, x2, y2 = obj.box
    for polygon in obj.polygons or [[(x1, y1), (x1, y2), (x2, y2), (x2, y1)]]:
        draw.polygon(polygon, fill=1)
    mask = np.asarray(canvas) != 0
    if not mask.any():
        mask[min(int(y1), image_size[1] - 1), min(int(x1), image_size[0] - 1)] = True
    return mask


def object_bounds(obj: VcrObject) -> tuple[float, float, float, float]:
    if not obj.polygons:
        return obj.box
    xs = [x for polygon in obj.polygons for x, _ in polygon]
    ys = [y for polygon in obj.polygons for _, y in polygon]
    return min(xs), min(ys), max(xs), max(ys)


def inside(mask: np.ndarray, x: float, y: float) -> bool:
    column, row = int(x), int(y)
    return 0 <= row < mask.shape[0] and 0 <= column < mask.shape[1] and bool(mask[row, column])


def sampled_point(obj: VcrObject, mask: np.ndarray, rng: random.Random) -> tuple[float, float]:
    """Normal around the centre, variances w/8 and h/8 (px^2); 10 tries to land on the object, then an 11th as is."""
    x1, y1, x2, y2 = object_bounds(obj)
    centre, spread = ((x1 + x2) / 2, (y1 + y2) / 2), (math.sqrt((x2 - x1) / 8), math.sqrt((y2 - y1) / 8))
    for _ in range(10):
        x, y = rng.gauss(centre[0], spread[0]), rng.gauss(centre[1], spread[1])
        if inside(mask, x, y):
            return x, y
    return rng.gauss(centre[0], spread[0]), rng.gauss(centre[1], spread[1])


def point_on_object(obj: VcrObject, mask: np.ndarray, rng: random.Random) -> tuple[float, float]:
    """Uniform in the object's bounds, 50 tries to land on it (the original's rejection sampling)."""
    x1, y1, x2, y2 = object_bounds(obj)
    for _ in range(50):
        x, y = rng.uniform(x1, x2), rng.uniform(y1, y2)
        if inside(mask, x, y):
            return x, y
    return rng.uniform(x1, x2), rng.uniform(y1, y2)


def largest_angle(points: Sequence[tuple[float, float]]) -> float:
    angles = []
    for index in range(3):
        (ax, ay), (bx, by), (cx, cy) = (points[(index + shift) % 3] for shift in range(3))
        first, second = (ax - bx, ay - by), (cx - bx, cy - by)
        norms = math.hypot(*first) * math.hypot(*second)
        cosine = (first[0] * second[0] + first[1] * second[1]) / norms if norms else 1.0
        angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cosine)))))
    return max(angles)


def bezier_points(controls: Sequence[tuple[float, float]], count: int = 16) -> list[tuple[float, float]]:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = controls
    points = []
    for step in range(count):
        t = step / (count - 1)
        weights = ((1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3)
        points.append(
            (
                sum(w * x for w, x in zip(weights, (x0, x1, x2, x3), strict=True)),
                sum(w * y for w, y in zip(weights, (y0, y1, y2, y3), strict=True)),
            )
        )
    return points


def random_width(rng: random.Random, scale: float, low: int, high: int) -> int:
    return max(rng.randint(int(low * scale), int(high * scale)), 1)


def evaluation_prompt(obj: VcrObject, mask: np.ndarray, color: Any, scale: float, rng: random.Random) -> dict:
    return {
        "type": "point",
        "xy": list(sampled_point(obj, mask, rng)),
        "radius": max(int(8 * scale), 1),
        "color": color,
        "alpha": EVAL_ALPHA,
    }


def training_prompt(
    obj: VcrObject, mask: np.ndarray, shape: str, color: Any, scale: float, rng: random.Random
) -> dict:
    """One of the original's training shapes with its random size and opacity."""
    alpha = rng.randint(48, 128) / 255 if shape == "mask" else rng.randint(96, 255) / 255
    prompt = {"type": shape, "color": color, "alpha": alpha}
    x1, y1, x2, y2 = obj.box
    if shape == "box":
        return {**prompt, "xyxy": [x1, y1, x2, y2], "width": random_width(rng, scale, 2, 8)}
    if shape == "ellipse":
        left, top, right, bottom = object_bounds(obj)
        ratio, (cx, cy) = rng.uniform(1, 1.5), ((left + right) / 2, (top + bottom) / 2)
        half_w, half_h = (right - left) * ratio / 2, (bottom - top) * ratio / 2
        return {
            **prompt,
            "xyxy": [cx - half_w, cy - half_h, cx + half_w, cy + half_h],
            "width": random_width(rng, scale, 2, 8),
        }
    if shape == "triangle":
        width = random_width(rng, scale, 2, 8)
        while True:
            points = [point_on_object(obj, mask, rng) for _ in range(3)]
            if largest_angle(points) <= 150:
                return {**prompt, "points": [list(point) for point in points], "width": width}
    if shape == "scribble":
        width = random_width(rng, scale, 2, 12)
        controls = [point_on_object(obj, mask, rng) for _ in range(4)]
        return {**prompt, "points": [list(point) for point in bezier_points(controls)], "width": width}
    if shape == "mask_contour":
        # The original traced the outline at every offset in [-w, w]^2: a band 2w + 1 px wide.
        return {**prompt, "mask": mask, "width": 2 * random_width(rng, scale, 1, 2) + 1}
    if shape == "mask":
        return {**prompt, "mask": mask}
    return {**prompt, **arrow_geometry(obj, scale, rng), "width": random_width(rng, scale, 1, 6)}


def arrow_geometry(obj: VcrObject, scale: float, rng: random.Random) -> dict:
    """Tip on the object's centre jittered by a quarter of its box, tail `length` away at a random angle."""
    x1, y1, x2, y2 = obj.box
    longest = max(int(50 * scale), 1)
    length = rng.uniform(0.8 * min(x2 - x1, y2 - y1), longest)
    angle = rng.uniform(0, 2 * math.pi)
    tip_x = (x1 + x2) / 2 + rng.uniform(-0.25, 0.25) * (x2 - x1)
    tip_y = (y1 + y2) / 2 + rng.uniform(-0.25, 0.25) * (y2 - y1)
    length = max(length, 2.0)
    return {"xyxy": [tip_x + length * math.cos(angle), tip_y + length * math.sin(angle), tip_x, tip_y]}


def draw_objects(
    objects: list[VcrObject], referenced: list[int], styles: Mapping[int, tuple], image_size, rng, training: bool
) -> list[dict]:
    scale = max(image_size) / SIZE_ANCHOR
    prompts = []
    for index in referenced:
        _, color, shape = styles[index]
        mask = object_mask(objects[index], image_size)
        if training:
            prompts.append(training_prompt(objects[index], mask, shape, color, scale, rng))
        else:
            prompts.append(evaluation_prompt(objects[index], mask, color, scale, rng))
    return prompts


def convert_record(
    record: Mapping[str, Any], index: int, mode: str, image_folder: str | Path, seed: int = 0
) -> VcrQuestion:
    """One VCR record as a visually-prompted question (`mode` = `qa`, `qar` or `train`, see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    question_id = str(record_value(record, "id", index))
    rng = random.Random(f"{seed}:{question_id}")
    names = record_value(record, "names", index)
    metadata_path = Path(image_folder) / record_value(record, "metadata", index)
    objects, image_size = load_objects(metadata_path, names)
    answer_label, rationale_label = record.get("answer_label"), record.get("rationale_label")
    if mode == "qar" and answer_label is None:
        raise ValueError(f"record {index}['answer_label']: QA->R needs the right answer to show it")
    question = record["question"]
    if mode == "qar":
        corpora = [question, record["answer_choices"][answer_label], *record["rationale_choices"]]
    else:
        corpora = [question, *record["answer_choices"], *(record["rationale_choices"] if mode == "train" else [])]
    referenced = referenced_objects(corpora)
    missing = [object_index for object_index in referenced if object_index >= len(objects)]
    if missing:
        raise ValueError(f"record {index}['question']: object indices {missing} beyond its {len(objects)} objects")
    training = mode == "train"
    styles = assign_styles(referenced, TRAIN_SHAPES if training else EVAL_SHAPES, rng)
    texts = [render_tokens(tokens, styles, names, rng, training) for tokens in corpora]
    prompts = draw_objects(objects, referenced, styles, image_size, rng, training)
    image_path = str(Path(image_folder) / record_value(record, "image", index))
    letter = lambda label: LETTERS[label] if label is not None else None  # noqa: E731
    if mode == "qa":
        return VcrQuestion(
            question_id, image_path, multiple_choice(texts[0], texts[1:]), prompts, letter(answer_label)
        )
    if mode == "qar":
        asked = f'{QAR_REQUEST} "{texts[0]}" The answer is "{texts[1]}".What is the rationale for this decision?'
        return VcrQuestion(
            question_id, image_path, multiple_choice(asked, texts[2:]), prompts, letter(rationale_label)
        )
    return VcrQuestion(
        question_id,
        image_path,
        multiple_choice(texts[0], texts[1:5]),
        prompts,
        letter(answer_label),
        follow_up=multiple_choice("Why?", texts[5:]),
        follow_up_answer=letter(rationale_label),
    )


def training_chat(question: VcrQuestion) -> list[dict[str, Any]]:
    """The Q -> A, why -> R chat of a `train` conversion, image and prompts in the first user turn."""
    image_block = {"type": "image", "image": Image.open(question.image_path).convert("RGB")}
    image_block["visual_prompts"] = question.visual_prompts
    return [
        {"role": "user", "content": [image_block, {"type": "text", "text": question.text}]},
        {"role": "assistant", "content": [{"type": "text", "text": question.answer}]},
        {"role": "user", "content": [{"type": "text", "text": question.follow_up}]},
        {"role": "assistant", "content": [{"type": "text", "text": question.follow_up_answer}]},
    ]


class VcrChatDataset:
    """VCR training records as `{"messages": [...]}` chats (mode `train`), converted when accessed.

    Args:
        annotations_path (`str` or `Path`):
            The VCR JSONL file (`train.jsonl`).
        image_folder (`str` or `Path`):
            The folder the records' image and metadata paths are relative to (`vcr1images`).
        seed (`int`, *optional*, defaults to 0):
            Seed of the shapes, colours and wording.
    """

    def __init__(self, annotations_path: str | Path, image_folder: str | Path, seed: int = 0):
        self.records = load_annotations(annotations_path)
        for index, record in enumerate(self.records):
            for key in ("answer_label", "rationale_label"):
                if not isinstance(record.get(key), int):
                    raise ValueError(f"record {index}[{key!r}]: training needs the right choice's index")
        self.image_folder, self.seed = Path(image_folder), seed
        self.lengths = [estimated_length(record) for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        question = convert_record(self.records[index], index, "train", self.image_folder, self.seed)
        return {"messages": training_chat(question)}


def estimated_length(record: Mapping[str, Any]) -> int:
    """Tokens of every choice (objects count as a few words) plus the image's, for length grouping."""
    token_lists = [record["question"], *record["answer_choices"], *record["rationale_choices"]]
    return sum(len(tokens) for tokens in token_lists) * 2 + 96
