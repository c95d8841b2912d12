"""Evaluate the demo model on fresh cases of the shapes task, through the processor, chat template and `generate()`.

Two sets of `--n` fresh cases each (demo_task.py): the broad task (every prompt type and colour, half of the
questions in held-out wordings) and the legacy task (red prompts, the two questions of checkpoints up to v14). For
each, the accuracy overall, per question kind, prompt type, prompt colour and wording, beside the accuracy on the same
cases with the visual prompt left out (near chance when the model really reads the prompt):

    vision-zephyr eval-demo --n 1000 --seed 20261122 --model demo
"""

import argparse
import random
from collections import defaultdict
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor

from vision_zephyr_tools.demo_model.demo_task import TASKS, DemoCase, make_case
from vision_zephyr_tools.remote_code import REPO_ROOT


MAX_NEW_TOKENS = 4


def chat(case: DemoCase, with_prompt: bool = True) -> list[dict]:
    """The user turn a person would send: the image (with its visual prompt) and the question."""
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
    """Accuracy overall, per question kind, prompt type, prompt colour and wording."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for case, answer in zip(cases, answers, strict=True):
        correct = answer == case.answer
        for group in (
            "overall",
            f"question: {case.question_kind}",
            f"prompt: {case.prompt_type}",
            f"colour: {case.prompt_color}",
            f"wording: {case.wording}",
        ):
            groups[group].append(correct)
    return {group: sum(hits) / len(hits) for group, hits in sorted(groups.items(), key=group_order)}


def group_order(item: tuple[str, list[bool]]) -> tuple[int, str]:
    """ "overall" first, then the groups by dimension (colour, prompt, question, wording) and name."""
    group = item[0]
    return (0, "") if group == "overall" else (1, group)


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
    parser.add_argument("--n", type=int, default=1000, help="number of fresh cases of each task")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks to evaluate")
    parser.add_argument("--seed", type=int, default=20261122, help="seed of the cases (training never uses an int)")
    parser.add_argument("--model", default=str(REPO_ROOT / "demo"), help="checkpoint folder or Hub id")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_demo(args.model)
    for task in args.tasks:
        rng = random.Random(args.seed)
        cases = [make_case(rng, task=task, held_out_share=0.5) for _ in range(args.n)]
        results = evaluate(model, processor, cases, args.batch_size)
        print(f"{task} task: {args.n} fresh cases, seed {args.seed}, model {args.model}")
        for group in results["prompted"]:
            prompted, without = results["prompted"][group], results["no prompt"][group]
            print(f"  {group:<24} {prompted:7.1%}   without prompt {without:7.1%}")


if __name__ == "__main__":
    main()
