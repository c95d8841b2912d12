"""LLaVA-format training data as Vision-Zephyr chats.

One record of the JSON list (or one line of a JSONL file) is

    {"id": "...", "image": "relative/path.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"}, {"from": "gpt", "value": "A cat."}, ...],
     "visual_prompts": [{"type": "box", "xyxy": [10, 20, 120, 200], "color": "red"}]}

`image` and `visual_prompts` are optional; `visual_prompts` uses the processor's format (`visual_prompts.py`) and is
drawn onto the image here, so a bad prompt is reported with its record. Like the original, the image goes first in
the first user turn (`<image>\\n` + text) wherever the record's `<image>` was. Items are `{"messages": [...]}` chats
for `collator.ChatCollator`.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from vision_zephyr_tools.remote_code import load_repo_module


draw_visual_prompts = load_repo_module("visual_prompts").draw_visual_prompts


IMAGE_MARKER = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}
# A rough token count of one image for length grouping: the original's 3 tiles x 32 queries.
ESTIMATED_IMAGE_TOKENS = 96


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Reads a LLaVA JSON list or a JSONL file and checks every record (see `check_record`)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        records = json.loads(text)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    for index, record in enumerate(records):
        check_record(record, index)
    return records


def check_record(record: Any, index: int) -> None:
    """Raises a `ValueError` naming the record index and the key when a record is not a LLaVA chat."""
    where = f"record {index}"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a dict, got {type(record).__name__}")
    if "image" in record and not isinstance(record["image"], str):
        raise ValueError(f"{where}['image']: expected a path string, got {record['image']!r:.80}")
    if "visual_prompts" in record and "image" not in record:
        raise ValueError(f"{where}['visual_prompts']: given without an 'image' to draw them on")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"{where}['conversations']: expected a non-empty list of turns, got {turns!r:.80}")
    for position, turn in enumerate(turns):
        check_turn(turn, f"{where}['conversations'][{position}]", expected_speaker=("human", "gpt")[position % 2])
    if turns[-1]["from"] != "gpt":
        raise ValueError(f"{where}['conversations']: expected the last turn from 'gpt' (an answer to train on)")
    markers = sum(turn["value"].count(IMAGE_MARKER) for turn in turns)
    if "image" in record and markers > 1:
        raise ValueError(f"{where}['conversations']: expected at most one {IMAGE_MARKER!r}, got {markers}")
    if "image" not in record and markers:
        raise ValueError(f"{where}['image']: missing, but the conversation has {IMAGE_MARKER!r}")


def check_turn(turn: Any, where: str, expected_speaker: str) -> None:
    if not isinstance(turn, Mapping):
        raise ValueError(f"{where}: expected a dict with 'from' and 'value', got {turn!r:.80}")
    if turn.get("from") != expected_speaker:
        raise ValueError(
            f"{where}['from']: expected {expected_speaker!r} (turns alternate human, gpt), got {turn.get('from')!r}"
        )
    if not isinstance(turn.get("value"), str):
        raise ValueError(f"{where}['value']: expected a str, got {turn.get('value')!r:.80}")
    if expected_speaker == "gpt" and IMAGE_MARKER in turn["value"]:
        raise ValueError(f"{where}['value']: {IMAGE_MARKER!r} can only be in a 'human' turn")


def record_to_messages(record: Mapping[str, Any], image: Image.Image | None = None) -> list[dict[str, Any]]:
    """The chat of a (checked) record; the image block, if any, opens the first user turn."""
    messages = []
    for position, turn in enumerate(record["conversations"]):
        text = turn["value"]
        content: list[dict[str, Any]] = []
        if position == 0 and image is not None:
            content.append({"type": "image", "image": image})
            text = strip_image_marker(text)
        content.append({"type": "text", "text": text})
        messages.append({"role": ROLES[turn["from"]], "content": content})
    return messages


def strip_image_marker(text: str) -> str:
    """The text without `<image>` and the newline that separates it (the chat template writes `<image>\\n`)."""
    for marker in (IMAGE_MARKER + "\n", "\n" + IMAGE_MARKER, IMAGE_MARKER):
        if marker in text:
            return text.replace(marker, "", 1).strip()
    return text


def estimated_length(record: Mapping[str, Any]) -> int:
    """A cheap length for grouping batches: words of every turn plus the image's tokens (no tokenizer, no image)."""
    words = sum(len(turn["value"].split()) for turn in record["conversations"])
    return words + (ESTIMATED_IMAGE_TOKENS if "image" in record else 0)


class LlavaChatDataset(Dataset):
    """LLaVA-format records as `{"messages": [...]}` chats, images opened (and prompts drawn) on access.

    Args:
        data_path (`str` or `Path`):
            The JSON list or JSONL file.
        image_folder (`str` or `Path`, *optional*):
            Folder that the records' `image` paths are relative to; defaults to the data file's folder.
    """

    def __init__(self, data_path: str | Path, image_folder: str | Path | None = None):
        self.records = load_records(data_path)
        self.image_folder = Path(image_folder) if image_folder is not None else Path(data_path).parent
        self.lengths = [estimated_length(record) for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = self.load_image(record, index) if "image" in record else None
        return {"messages": record_to_messages(record, image)}

    def load_image(self, record: Mapping[str, Any], index: int) -> Image.Image:
        path = self.image_folder / record["image"]
        try:
            image = Image.open(path).convert("RGB")
        except OSError as error:
            raise ValueError(f"record {index}['image']: cannot open {str(path)!r}: {error}") from error
        try:
            return draw_visual_prompts(image, record.get("visual_prompts"))
        except (TypeError, ValueError) as error:
            raise ValueError(f"record {index}['visual_prompts']: {error}") from error
