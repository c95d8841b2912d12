"""Evaluate Vision-Zephyr on VCR (Q->A, QA->R) and MMBench: multiple choice, greedy, batched, resumable.

    vision-zephyr evaluate vcr --model MODEL --annotations val.jsonl --image_folder vcr1images --task qa --output_dir out/vcr-qa
    vision-zephyr evaluate mmbench --model MODEL --tsv MMBench_DEV_EN.tsv --output_dir out/mmbench

Every answer is appended to `OUTPUT_DIR/predictions.jsonl` as soon as its batch is done; running the same command
again skips the questions already there. The letter is read from the generated text (`extract_letter`); a text
without a recognisable letter counts as wrong (the original guessed "A"). Scores are printed and written to
`OUTPUT_DIR/results.json`. MMBench is scored with circular evaluation: each question is asked once per rotation of
its options and counts as right only if every rotation is answered right (rows that share `index % 1_000_000`, as
in MMBench's own circular files, form one group too).
"""

import argparse
import base64
import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm


LETTERS = "ABCDEFGH"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
CIRCULAR_GROUP = 1_000_000


@dataclass
class Question:
    """One multiple-choice question: `text` goes after the image in the user turn; `answer` is the right letter."""

    question_id: str
    load_image: Callable[[], Image.Image]
    text: str
    answer: str | None
    letters: str
    visual_prompts: list[dict] | None = None
    group: str = ""
    category: str | None = None


AnswerFunction = Callable[[list[Question]], list[str]]


@dataclass
class Prediction:
    question_id: str
    text: str
    prediction: str | None
    answer: str | None
    group: str
    category: str | None = None
    prompt: str = field(default="", repr=False)


def extract_letter(text: str, letters: str = "ABCD") -> str | None:
    """The option letter a free-form answer names: "(B)", "B.", "B)", "Answer: B", "B" alone, or a leading "B ..."."""
    choices = f"[{letters}]"
    patterns = [
        rf"\(({choices})\)",  # (B)
        rf"^\s*({choices})\s*$",  # B
        rf"^\s*({choices})[\.\):,]",  # B. / B) / B:
        rf"\b(?:answer|option|choice)\s*(?:is)?\s*:?\s*({choices})\b",  # The answer is B
        rf"^\s*({choices})\b(?!')",  # B because ...
        rf"(?<![\w'])({choices})(?![\w'])",  # an isolated capital letter anywhere
    ]
    for pattern in patterns:
        match = re.search(pattern, text, flags=re.MULTILINE)
        if match:
            return match.group(1)
    return None


def batched(items: Sequence, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def read_predictions(path: Path) -> dict[str, Prediction]:
    """Predictions already written; a line cut off by an interrupted run is ignored (and asked again)."""
    if not path.exists():
        return {}
    done = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            prediction = Prediction(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        done[prediction.question_id] = prediction
    return done


def run_questions(
    questions: list[Question], answer: AnswerFunction, predictions_path: Path, batch_size: int
) -> list[Prediction]:
    """Answers every question not yet in `predictions_path`, appending as it goes; returns them all, in order."""
    predictions_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_predictions(predictions_path)
    todo = [question for question in questions if question.question_id not in done]
    with (
        predictions_path.open("a", encoding="utf-8") as output,
        tqdm(total=len(questions), initial=len(questions) - len(todo), desc="questions", unit="q") as progress,
    ):
        for batch in batched(todo, batch_size):
            for question, text in zip(batch, answer(batch), strict=True):
                prediction = Prediction(
                    question_id=question.question_id,
                    text=text,
                    prediction=extract_letter(text, question.letters),
                    answer=question.answer,
                    group=question.group or question.question_id,
                    category=question.category,
                    prompt=question.text,
                )
                done[question.question_id] = prediction
                output.write(json.dumps(asdict(prediction)) + "\n")
            output.flush()
            progress.update(len(batch))
    return [done[question.question_id] for question in questions]


def score(predictions: list[Prediction], circular: bool) -> dict[str, Any]:
    """Accuracy over questions; with `circular`, over groups that must be right in every member."""
    scored = [prediction for prediction in predictions if prediction.answer is not None]
    correct = [prediction.prediction == prediction.answer for prediction in scored]
    results = {
        "questions": len(scored),
        "correct": sum(correct),
        "accuracy": sum(correct) / len(scored) if scored else None,
        "unparsed": sum(prediction.prediction is None for prediction in scored),
    }
    if circular:
        groups: dict[str, list[bool]] = defaultdict(list)
        categories: dict[str, str | None] = {}
        for prediction, right in zip(scored, correct, strict=True):
            groups[prediction.group].append(right)
            categories[prediction.group] = prediction.category
        results["groups"] = len(groups)
        results["circular_accuracy"] = sum(all(rights) for rights in groups.values()) / len(groups) if groups else None
        per_category: dict[str, list[bool]] = defaultdict(list)
        for group, rights in groups.items():
            if categories[group] is not None:
                per_category[categories[group]].append(all(rights))
        results["circular_accuracy_per_category"] = {
            category: sum(rights) / len(rights) for category, rights in sorted(per_category.items())
        }
    return results


def evaluate(
    questions: list[Question],
    answer: AnswerFunction,
    output_dir: str | Path,
    batch_size: int = 8,
    circular: bool = False,
    task: str = "",
) -> dict[str, Any]:
    """Answers (resuming), scores, prints and saves `results.json`; returns the results."""
    output_dir = Path(output_dir)
    predictions = run_questions(questions, answer, output_dir / "predictions.jsonl", batch_size)
    results = {"task": task, **score(predictions, circular)}
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return results


# Datasets


def open_rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def vcr_questions(annotations: str | Path, image_folder: str | Path, task: str, seed: int = 0) -> list[Question]:
    """VCR `qa` (question -> answer) or `qar` (question + answer -> rationale) questions with point prompts."""
    from vision_zephyr_tools.training.vcr import convert_record, load_annotations

    questions = []
    for index, record in enumerate(load_annotations(annotations)):
        converted = convert_record(record, index, task, image_folder, seed)
        questions.append(
            Question(
                question_id=converted.question_id,
                load_image=partial(open_rgb, converted.image_path),
                text=converted.text,
                answer=converted.answer,
                letters="ABCD",
                visual_prompts=converted.visual_prompts,
            )
        )
    return questions


def mmbench_questions(tsv: str | Path, circular: bool = True) -> list[Question]:
    """MMBench TSV rows (index, question, hint, A-D, answer, image in base64, category); rotated when `circular`."""
    rows = read_tsv(tsv)
    questions = []
    for row_number, row in enumerate(rows):
        options = [str(row[letter]) for letter in LETTERS if str(row.get(letter, "")).strip()]
        answer = str(row.get("answer", "")).strip() or None
        if answer is not None and LETTERS.index(answer) >= len(options):
            raise ValueError(f"row {row_number}['answer']: {answer!r} is not one of its {len(options)} options")
        rotations = range(len(options)) if circular else range(1)
        for shift in rotations:
            questions.append(mmbench_question(row, options, answer, shift))
    return questions


def read_tsv(tsv: str | Path) -> list[dict[str, str]]:
    """The rows of an MMBench TSV as dicts of their text (no pandas: the values are used as written)."""
    # A row holds its image in base64: far longer than the csv module's default field limit of 128 KiB.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    with open(tsv, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file, delimiter="\t")
        missing = {"index", "question", "image", "A", "B"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{tsv}: missing columns {sorted(missing)}")
        return list(reader)


def mmbench_question(row: dict, options: list[str], answer: str | None, shift: int) -> Question:
    rotated = options[shift:] + options[:shift]
    letters = LETTERS[: len(options)]
    hint = str(row.get("hint", "")).strip()
    lines = [*([hint] if hint else []), str(row["question"])]
    lines += [f"{letter}. {option}" for letter, option in zip(letters, rotated, strict=True)]
    rotated_answer = letters[(LETTERS.index(answer) - shift) % len(options)] if answer else None
    return Question(
        question_id=f"{row['index']}" if shift == 0 else f"{row['index']}-rotation{shift}",
        load_image=partial(decode_base64_image, row["image"]),
        text="\n".join([*lines, MC_INSTRUCTION]),
        answer=rotated_answer,
        letters=letters,
        group=str(int(row["index"]) % CIRCULAR_GROUP),
        category=str(row["category"]) if row.get("category") else None,
    )


def decode_base64_image(encoded: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")


# The model


def model_answer_function(model, processor, max_new_tokens: int = 128) -> AnswerFunction:
    """Greedy answers of a Vision-Zephyr model to a batch of questions (the chat template, left padding)."""
    import torch

    def answer(batch: list[Question]) -> list[str]:
        conversations = [
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": question.load_image(), "visual_prompts": question.visual_prompts},
                        {"type": "text", "text": question.text},
                    ],
                }
            ]
            for question in batch
        ]
        inputs = processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        ).to(model.device)
        with torch.inference_mode():
            output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        return processor.post_process_image_text_to_text(output[:, inputs["input_ids"].shape[1] :])

    return answer


def load_model(model_path: str, dtype: str):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(
        model_path, trust_remote_code=True, dtype=getattr(torch, dtype), device_map="auto"
    ).eval()
    return model, processor


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmarks = parser.add_subparsers(dest="benchmark", required=True)
    vcr = benchmarks.add_parser("vcr", help="VCR Q->A or QA->R with point prompts on the referenced objects")
    vcr.add_argument("--annotations", required=True, help="VCR val.jsonl (or any VCR-format JSONL with labels)")
    vcr.add_argument("--image_folder", required=True, help="folder of img_fn and metadata_fn (vcr1images)")
    vcr.add_argument("--task", choices=["qa", "qar"], default="qa", help="qa: Q->A, qar: QA->R")
    vcr.add_argument("--seed", type=int, default=0, help="seed of the prompts' colours and positions")
    mmbench = benchmarks.add_parser("mmbench", help="MMBench TSV with circular evaluation")
    mmbench.add_argument("--tsv", required=True, help="MMBench TSV (index, question, hint, A-D, answer, image)")
    mmbench.add_argument("--no_circular", action="store_true", help="ask each question once, options as given")
    for benchmark in (vcr, mmbench):
        benchmark.add_argument("--model", required=True, help="Vision-Zephyr checkpoint folder or Hub id")
        benchmark.add_argument("--output_dir", required=True, help="predictions.jsonl and results.json go here")
        benchmark.add_argument("--batch_size", type=int, default=8)
        benchmark.add_argument("--max_new_tokens", type=int, default=128, help="the original used 128 for VCR")
        benchmark.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_arguments(argv)
    if args.benchmark == "vcr":
        questions, circular, task = (
            vcr_questions(args.annotations, args.image_folder, args.task, args.seed),
            False,
            f"vcr-{args.task}",
        )
    else:
        questions, circular, task = mmbench_questions(args.tsv, not args.no_circular), not args.no_circular, "mmbench"
    model, processor = load_model(args.model, args.dtype)
    answer = model_answer_function(model, processor, args.max_new_tokens)
    return evaluate(questions, answer, args.output_dir, args.batch_size, circular, task)


if __name__ == "__main__":
    main()
