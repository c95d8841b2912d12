"""Evaluate the demo model on fresh cases of the shapes task, through the processor, chat template and `generate()`.

Prints the accuracy overall, per question and per prompt type, then the accuracy on the same cases with the visual
prompt left out (near chance when the model really reads the prompt):

    vision-zephyr eval-demo --n 500 --seed 20261122 --model demo
"""

import argparse
import random
from collections import defaultdict
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor

from vision_zephyr_tools.demo_model.demo_task import DemoCase, make_case
from vision_zephyr_tools.remote_code import REPO_ROOT


MAX_NEW_TOKENS = 4


def chat(case: DemoCase, with_prompt: bool = True) -> list[dict]:
    """The user turn a person would send: the image (with its red prompt) and the question."""
    image_block = {"type": "image", "image": case.image}
    if with_prompt:
        image_block["visual_prompts"] = [case.visual_prompt]
    return [{"role": "user", "content": [image_block, {"type": "text", "text": case.question}]}]


@torch.no_grad()
def generate_answers(model, processor, cases: list[DemoCase], with_prompt: bool, batch_size: int) -> list[str]:
    """Greedy answers of the model, decoded and stripped, one per case."""
    answers = []
    for start in tqdm(range(0, len(cases), batch_size), desc="prompted" if with_prompt else "no prompt", leave=False):
        chunk = cases[start : start + batch_size]
        inputs = processor.apply_chat_template(
            [chat(case, with_prompt) for case in chunk],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
        generated = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        answers += [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    return answers


def accuracy_table(cases: list[DemoCase], answers: list[str]) -> dict[str, float]:
    """Accuracy overall, per question kind and per prompt type."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for case, answer in zip(cases, answers, strict=True):
        correct = answer == case.answer
        for group in ("overall", f"question: {case.question_kind}", f"prompt: {case.prompt_type}"):
            groups[group].append(correct)
    return {group: sum(hits) / len(hits) for group, hits in sorted(groups.items())}


def evaluate(model, processor, cases: list[DemoCase], batch_size: int = 16) -> dict[str, dict[str, float]]:
    """Accuracy tables with the visual prompt drawn (`"prompted"`) and left out (`"no prompt"`)."""
    return {
        "prompted": accuracy_table(cases, generate_answers(model, processor, cases, True, batch_size)),
        "no prompt": accuracy_table(cases, generate_answers(model, processor, cases, False, batch_size)),
    }


def load_demo(model_dir: Path | str):
    """The demo checkpoint loaded the way users load it (remote code from the folder), in float32 on CPU."""
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, trust_remote_code=True, dtype=torch.float32)
    return model.eval(), processor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="number of fresh cases")
    parser.add_argument("--seed", type=int, default=20261122, help="seed of the cases (training never uses an int)")
    parser.add_argument("--model", default=str(REPO_ROOT / "demo"), help="checkpoint folder or Hub id")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_demo(args.model)
    rng = random.Random(args.seed)
    cases = [make_case(rng) for _ in range(args.n)]
    results = evaluate(model, processor, cases, args.batch_size)
    print(f"{args.n} fresh cases, seed {args.seed}, model {args.model}")
    for group in results["prompted"]:
        print(f"{group:<20} {results['prompted'][group]:7.1%}   without prompt {results['no prompt'][group]:7.1%}")


if __name__ == "__main__":
    main()
