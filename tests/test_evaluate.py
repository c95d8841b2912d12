"""Evaluation (vision_zephyr_tools/evaluation.py): letter extraction, scoring, resuming, MMBench circular, and a real tiny run."""

import json
from pathlib import Path

import pytest

from vision_zephyr_tools.evaluation import evaluate, extract_letter, main, mmbench_questions, vcr_questions


FIXTURES = Path(__file__).resolve().parent / "fixtures"
VCR_ANNOTATIONS = FIXTURES / "vcr" / "val.jsonl"
VCR_IMAGES = FIXTURES / "vcr" / "vcr1images"
MMBENCH = FIXTURES / "mmbench" / "mmbench_dev_tiny.tsv"


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("C", "C"),
        ("(B)", "B"),
        ("The best answer is (D) because it rains.", "D"),
        ("B. They are friends.", "B"),
        ("Answer: A", "A"),
        ("The answer is C", "C"),
        ("I think it's D", "D"),
        ("They are friends.", None),
        ("", None),
    ],
)
def test_extract_letter(text, letter):
    assert extract_letter(text) == letter


def test_extract_letter_only_accepts_the_questions_letters():
    assert extract_letter("D", letters="ABC") is None


def stub(answers: dict[str, str], asked: list[str] | None = None):
    """An answer function that returns fixed texts by question id (and records what it was asked)."""

    def answer(batch):
        if asked is not None:
            asked.extend(question.question_id for question in batch)
        return [answers[question.question_id] for question in batch]

    return answer


def test_vcr_accuracy_of_known_answers_is_printed_and_saved(tmp_path, capsys):
    questions = vcr_questions(VCR_ANNOTATIONS, VCR_IMAGES, "qa")
    assert [question.answer for question in questions] == ["C", "D"]
    results = evaluate(
        questions, stub({"val-0": "(C)", "val-1": "A. Sleeping"}), tmp_path, batch_size=2, task="vcr-qa"
    )
    assert results == {"task": "vcr-qa", "questions": 2, "correct": 1, "accuracy": 0.5, "unparsed": 0}
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert '"accuracy": 0.5' in capsys.readouterr().out
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [(line["question_id"], line["prediction"], line["answer"]) for line in lines] == [
        ("val-0", "C", "C"),
        ("val-1", "A", "D"),
    ]


def test_unparsed_answers_count_as_wrong(tmp_path):
    questions = vcr_questions(VCR_ANNOTATIONS, VCR_IMAGES, "qar")
    results = evaluate(questions, stub({"val-0": "A", "val-1": "no idea"}), tmp_path, batch_size=1)
    assert (results["correct"], results["unparsed"], results["accuracy"]) == (1, 1, 0.5)


def test_an_interrupted_run_resumes_with_the_questions_left(tmp_path):
    questions = vcr_questions(VCR_ANNOTATIONS, VCR_IMAGES, "qa")

    def interrupted(batch):
        if batch[0].question_id == "val-1":
            raise KeyboardInterrupt
        return ["C"]

    with pytest.raises(KeyboardInterrupt):
        evaluate(questions, interrupted, tmp_path, batch_size=1)
    with (tmp_path / "predictions.jsonl").open("a") as predictions:
        predictions.write('{"question_id": "val-1", "te')  # a line cut off mid-write
    asked: list[str] = []
    results = evaluate(questions, stub({"val-0": "C", "val-1": "D"}, asked), tmp_path, batch_size=1)
    assert asked == ["val-1"], "only the unanswered question is asked again"
    assert (results["questions"], results["accuracy"]) == (2, 1.0)


def test_mmbench_rotations_move_the_answer_letter():
    questions = mmbench_questions(MMBENCH)
    assert [question.question_id for question in questions] == [
        *("0", "0-rotation1", "0-rotation2", "0-rotation3"),
        *("1", "1-rotation1", "1-rotation2"),
    ]
    assert [question.answer for question in questions] == ["A", "D", "C", "B", "A", "C", "B"]
    assert questions[1].text == (
        "What colour is the circle?\nA. green\nB. blue\nC. black\nD. red\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert questions[4].text.startswith("Count carefully.\nHow many circles are there?\nA. one\nB. two\nC. three\n")
    assert questions[4].letters == "ABC"


def test_mmbench_circular_accuracy_needs_every_rotation_right(tmp_path):
    questions = mmbench_questions(MMBENCH)
    always_a = stub({question.question_id: "A" for question in questions})
    results = evaluate(questions, always_a, tmp_path / "always-a", batch_size=3, circular=True)
    assert (results["accuracy"], results["circular_accuracy"], results["groups"]) == (2 / 7, 0.0, 2)
    right = stub({question.question_id: question.answer for question in questions})
    results = evaluate(questions, right, tmp_path / "right", batch_size=3, circular=True)
    assert results["circular_accuracy"] == 1.0
    assert results["circular_accuracy_per_category"] == {"attribute_recognition": 1.0, "object_counting": 1.0}


def test_real_tiny_model_run_writes_predictions_and_results(tiny_checkpoint, tmp_path):
    arguments = [
        *("vcr", "--model", str(tiny_checkpoint), "--annotations", str(VCR_ANNOTATIONS)),
        *("--image_folder", str(VCR_IMAGES), "--output_dir", str(tmp_path), "--batch_size", "2"),
        *("--max_new_tokens", "2", "--dtype", "float32"),
    ]
    results = main(arguments)
    assert results["questions"] == 2 and results["task"] == "vcr-qa"
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 2
