"""VCR annotations -> visual prompts and questions (vision_zephyr_tools/training/vcr.py), on a fixture in the release's format."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from vision_zephyr_tools.training.vcr import EVAL_ALPHA, TRAIN_SHAPES, VcrChatDataset, convert_record, load_annotations


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vcr"
IMAGES = FIXTURES / "vcr1images"
BOXES = [(4, 8, 30, 60), (40, 10, 62, 58), (66, 34, 92, 60)]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return load_annotations(FIXTURES / "val.jsonl")


def test_question_to_answer_prompt_for_the_fixture(records):
    question = convert_record(records[0], 0, "qa", IMAGES, seed=0)
    assert question.text == (
        "Why is the person at orange point looking at the person at purple point?\n"
        "A. The person at orange point is angry with the person at the purple point.\n"
        "B. The person at purple point owes money.\n"
        "C. They are friends.\n"
        "D. The person at the orange point likes the dog.\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert question.answer == "C" and question.question_id == "val-0"
    assert [(prompt["type"], prompt["color"], prompt["radius"]) for prompt in question.visual_prompts] == [
        ("point", "orange", 2),
        ("point", "purple", 2),
    ]
    assert question.image_path == str(IMAGES / "movie_a" / "shot@0.jpg")


def test_rationale_prompt_quotes_the_question_and_the_right_answer(records):
    question = convert_record(records[0], 0, "qar", IMAGES, seed=0)
    assert question.text.startswith(
        "I give you a question and its answer, I need you to provide a rationale explaining why the answer is "
        'right. "Why is the person at'
    )
    assert '" The answer is "They are friends.".What is the rationale for this decision?\nA. ' in question.text
    assert question.answer == "A", "the target is the rationale's letter"
    assert len(question.visual_prompts) == 3, "objects of the question, the right answer and all rationales"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("record_index", [0, 1])
def test_evaluation_points_sit_on_their_objects_with_the_colour_the_text_names(records, seed, record_index):
    question = convert_record(records[record_index], record_index, "qa", IMAGES, seed=seed)
    referenced = sorted(
        {
            i
            for tokens in [records[record_index]["question"], *records[record_index]["answer_choices"]]
            for t in tokens
            if isinstance(t, list)
            for i in t
        }
    )
    assert len(question.visual_prompts) == len(referenced)
    named = [prompt["color"] for prompt in question.visual_prompts if isinstance(prompt["color"], str)]
    if len(referenced) > 1:
        assert len(named) == len(referenced) == len(set(named)), "several points need distinct named colours"
    for object_index, prompt in zip(referenced, question.visual_prompts, strict=True):
        x1, y1, x2, y2 = BOXES[object_index]
        assert prompt["type"] == "point" and prompt["alpha"] == EVAL_ALPHA
        assert x1 <= prompt["xy"][0] <= x2 and y1 <= prompt["xy"][1] <= y2, f"point {prompt['xy']} off its object"
    for color in named:
        assert re.search(rf"(person|dog) at (the )?{color} point", question.text), f"{color} is not named in the text"
    if not named:
        assert re.search(r"dog at (the )?point", question.text), "an unnamed colour is left out of the phrase"


def test_conversion_is_deterministic_per_seed_and_record(records):
    first = convert_record(records[1], 1, "qa", IMAGES, seed=3)
    again = convert_record(records[1], 5, "qa", IMAGES, seed=3)
    assert (first.text, first.visual_prompts) == (again.text, again.visual_prompts)
    others = [convert_record(records[1], 1, "qa", IMAGES, seed=seed).visual_prompts for seed in range(4, 8)]
    assert any(prompts != first.visual_prompts for prompts in others), "the seed must matter"


def test_training_chat_uses_the_training_shapes_and_answers_with_letters(records):
    dataset = VcrChatDataset(FIXTURES / "val.jsonl", IMAGES, seed=1)
    messages = dataset[0]["messages"]
    assert [message["role"] for message in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"][0]["text"] == "C" and messages[3]["content"][0]["text"] == "A"
    assert messages[2]["content"][0]["text"].startswith("Why?\nA. ")
    prompts = messages[0]["content"][0]["visual_prompts"]
    assert len(prompts) == 3 and all(prompt["type"] in TRAIN_SHAPES for prompt in prompts)
    for prompt in prompts:
        if "mask" in prompt:
            assert prompt["mask"].shape == (64, 96) and prompt["mask"].dtype == np.bool_


def test_training_shapes_cover_the_originals_set_and_draw(records, processor_for_drawing):
    shapes = set()
    for seed in range(40):
        question = convert_record(records[0], 0, "train", IMAGES, seed=seed)
        shapes |= {prompt["type"] for prompt in question.visual_prompts}
        image = processor_for_drawing(question)
        assert image.size == (96, 64)
    assert shapes == set(TRAIN_SHAPES), f"never drew {set(TRAIN_SHAPES) - shapes}"


@pytest.fixture(scope="module")
def processor_for_drawing():
    from PIL import Image

    from vision_zephyr_tools.training.llava_data import draw_visual_prompts

    def draw(question):
        return draw_visual_prompts(Image.open(question.image_path), question.visual_prompts)

    return draw


def test_bad_annotations_name_the_record_and_key(tmp_path, records):
    broken = dict(records[0])
    del broken["img_fn"]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(records[1]) + "\n" + json.dumps(broken) + "\n")
    with pytest.raises(ValueError, match=r"record 1: missing 'img_fn' or 'image'"):
        load_annotations(path)
    beyond = {**records[0], "question": ["Is", [7], "here", "?"]}
    with pytest.raises(ValueError, match=r"record 0\['question'\]: object indices \[7\]"):
        convert_record(beyond, 0, "qa", IMAGES)
