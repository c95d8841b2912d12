"""Side-by-side recipe variants for the demo model, one process each, on a CUDA GPU (or slowly on CPU).

Each variant is the committed recipe of `train_demo.py` (batch 16, AdamW, cosine schedule, same seeded data) with a
few things changed: model sizes, data mix, learning rate or initialisation. Batches come from DataLoader workers;
every `--eval-every` steps the first-answer-token accuracy is printed per question on 192 held-out real-task cases
and 96 single-shape cases, so the variants' learning curves can be compared at equal steps. BENCHMARKS.md ("Demo
model") has the results of the runs below on one H100 (8 variants at a time, 2 data workers each):

    python research/demo_recipe_sweep.py --steps 1500 --out /tmp/sweep A_control B_w128 C_no_layer0 ...
    python research/demo_recipe_sweep.py --list
"""

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import get_cosine_schedule_with_warmup

from vision_zephyr_tools.demo_model import demo_task, train_demo
from vision_zephyr_tools.demo_model.demo_task import make_case
from vision_zephyr_tools.training.collator import ChatCollator


WIDE_TOWER = {"hidden_size": 128, "intermediate_size": 512, "projection_dim": 128}
BIG_SHAPES = (0.45, 0.60)
TASK_SIZES = demo_task.SHAPE_SIZE_FRACTIONS
# Keys: "vision"/"text"/"projector" update train_demo's config dicts, "config" sets attributes of the built config;
# "data": "task" (real scenes mixed with single-shape ones, as train_demo) or "shape_single" (single-shape scenes,
# shape question only); "big"/"big_steps": single-shape scenes' size range at step 0, reaching the task's at
# big_steps; "floor"/"curriculum": train_demo's single-shape floor and fade steps; "lm_lecun": LeCun-normal LM linears.
VARIANTS: dict[str, dict] = {
    "A_control": {},
    "B_w128": {"vision": WIDE_TOWER},
    "C_no_layer0": {"projector": {"vision_feature_layers": [[2], [4]]}},
    "D_w128_no_layer0": {"vision": WIDE_TOWER, "projector": {"vision_feature_layers": [[2], [4]]}},
    "F_depth6": {"vision": {"num_hidden_layers": 6}, "projector": {"vision_feature_layers": [[0], [3], [6]]}},
    "G_all_single": {"floor": 1.0},
    "H_w128_lr1e-3": {"vision": WIDE_TOWER, "lr": 1e-3, "warmup": 200},
    "I_w128_depth6": {
        "vision": {**WIDE_TOWER, "num_hidden_layers": 6},
        "projector": {"vision_feature_layers": [[0], [3], [6]]},
    },
    "S1_shape_only": {"data": "shape_single"},
    "S2_no_text_conditioning": {"data": "shape_single", "config": {"qformer_text_conditioning": False}},
    "S3_lm4": {"data": "shape_single", "text": {"num_hidden_layers": 4}},
    "S4_lr5e-4": {"data": "shape_single", "lr": 5e-4},
    "S5_w128": {"data": "shape_single", "vision": WIDE_TOWER},
    "S6_fuse_last": {"data": "shape_single", "projector": {"vision_feature_layers": [[4]]}},
    "S7_lr4e-3": {"data": "shape_single", "lr": 4e-3},
    "S8_no_salience": {"data": "shape_single", "salience": 0},
    "Z1_big": {"data": "shape_single", "big": BIG_SHAPES, "big_steps": 10**9},
    "Z2_big_fading": {"data": "shape_single", "big": BIG_SHAPES, "big_steps": 600},
    "Z3_task_big_fading": {"data": "task", "big": BIG_SHAPES, "big_steps": 800},
    "Z4_task_big_fading_floor5": {
        "data": "task",
        "big": BIG_SHAPES,
        "big_steps": 800,
        "floor": 0.5,
        "curriculum": 800,
    },
    "Z5_task_big_fading_w128": {
        "data": "task",
        "big": BIG_SHAPES,
        "big_steps": 800,
        "vision": WIDE_TOWER,
        "lr": 1e-3,
        "warmup": 200,
    },
    "Z6_task_big_fading1200": {"data": "task", "big": BIG_SHAPES, "big_steps": 1200},
    "Z7_task_big_fading_no_text": {
        "data": "task",
        "big": BIG_SHAPES,
        "big_steps": 800,
        "config": {"qformer_text_conditioning": False},
    },
    "Z8_task_big35": {"data": "task", "big": (0.35, 0.50), "big_steps": 800},
    "L1_task_lm_lecun": {"data": "task", "lm_lecun": True},
    "L2_shape_only_lm_lecun": {"data": "shape_single", "lm_lecun": True},
    "L3_big_lm_lecun": {"data": "shape_single", "big": BIG_SHAPES, "big_steps": 10**9, "lm_lecun": True},
    "L4_task_lm_lecun_lr1e-3": {"data": "task", "lm_lecun": True, "lr": 1e-3},
    "L5_task_lm_lecun_floor5": {"data": "task", "lm_lecun": True, "floor": 0.5, "curriculum": 800},
}


class VariantBatches(torch.utils.data.Dataset):
    """Batch `step` of a variant, rebuilt from its own seeded generator (as train_demo's batches are)."""

    def __init__(self, processor, recipe: dict, steps: int):
        self.collator, self.recipe, self.steps = ChatCollator(processor), recipe, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        recipe = self.recipe
        if "data" not in recipe:
            batch, *_ = train_demo.training_batch(
                self.collator, 0, step, 16, recipe.get("curriculum", 400), recipe.get("floor", 0.3), 1200, "legacy"
            )
            return batch
        rng = random.Random(f"0-{step}")
        salience = train_demo.fading_share(step, recipe.get("salience", 1200))
        single_sizes = single_shape_sizes(recipe, step)
        single_share = max(recipe.get("floor", 0.3), train_demo.fading_share(step, recipe.get("curriculum", 400)))
        examples = []
        shape_only = recipe["data"] == "shape_single"
        for _ in range(16):
            single = shape_only or rng.random() < single_share
            if single:
                case = make_case(rng, train_demo.SINGLE_SHAPE, single_sizes, task="legacy")
            else:
                case = make_case(rng, demo_task.SHAPES_PER_IMAGE, TASK_SIZES, task="legacy")
            if shape_only:
                case = dataclasses.replace(
                    case, question_kind="shape", question=demo_task.QUESTIONS["shape"], answer=case.target.kind
                )
            prompt = train_demo.salient_prompt(case.visual_prompt, case.image.size, salience)
            both = not shape_only and rng.random() < train_demo.TWO_QUESTION_SHARE
            follow_ups = [demo_task.other_question(rng, case)] if both else []
            examples.append({"messages": train_demo.training_chat(case, prompt, follow_ups)})
        return self.collator(examples)


def single_shape_sizes(recipe: dict, step: int) -> tuple[float, float]:
    """Size range of single-shape scenes: `recipe["big"]` at step 0, linearly down to the task's at big_steps."""
    if "big" not in recipe:
        return TASK_SIZES
    progress = min(1.0, step / recipe["big_steps"])
    return tuple(big + (task - big) * progress for big, task in zip(recipe["big"], TASK_SIZES, strict=True))


@torch.no_grad()
def first_token_accuracy_by_question(model, processor, cases, device) -> dict[str, float]:
    model.eval()
    hits = defaultdict(list)
    for start in range(0, len(cases), 32):
        chunk = cases[start : start + 32]
        batch = {key: value.to(device) for key, value in train_demo.encode_cases(processor, chunk).items()}
        predicted = model(**batch, logits_to_keep=1).logits[:, -1].argmax(-1).tolist()
        for case, token in zip(chunk, predicted, strict=True):
            correct = token == train_demo.first_answer_token(processor, case.answer)
            hits[case.question_kind].append(correct)
            hits["all"].append(correct)
    model.train()
    return {kind: round(sum(values) / len(values), 3) for kind, values in sorted(hits.items())}


def build_model(recipe: dict):
    train_demo.VISION_CONFIG.update(recipe.get("vision", {}))
    train_demo.TEXT_CONFIG.update(recipe.get("text", {}))
    train_demo.PROJECTOR_CONFIG.update(recipe.get("projector", {}))
    config = train_demo.demo_config()
    for key, value in recipe.get("config", {}).items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = train_demo.load_repo_class("VisionZephyrForConditionalGeneration")(config)
    train_demo.initialize_for_training(model)
    if recipe.get("lm_lecun"):
        with torch.no_grad():
            for module in model.model.language_model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.normal_(0.0, module.in_features**-0.5)
    return model


def run_variant(name: str, args: argparse.Namespace) -> None:
    recipe = VARIANTS[name]
    device = torch.device(args.device)
    torch.set_num_threads(1)
    model = build_model(recipe).to(device).train()
    processor = train_demo.demo_processor()
    rng = random.Random(10_000)
    task_cases = [make_case(rng, task="legacy") for _ in range(192)]
    single_cases = [make_case(rng, train_demo.SINGLE_SHAPE, task="legacy") for _ in range(96)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.get("lr", 2e-3), weight_decay=0.01, betas=(0.9, 0.98))
    scheduler = get_cosine_schedule_with_warmup(optimizer, recipe.get("warmup", 100), args.steps)
    loader = torch.utils.data.DataLoader(
        VariantBatches(processor, recipe, args.steps), batch_size=None, num_workers=args.workers, prefetch_factor=4
    )
    log = (args.out / "sweep.log").open("a")

    def report(message: str) -> None:
        line = f"[{name}] {message}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    report(f"parameters {sum(p.numel() for p in model.parameters())}")
    started, losses = time.monotonic(), []
    for step, batch in enumerate(loader, start=1):
        loss = train_demo.answer_loss(model, {key: value.to(device) for key, value in batch.items()})
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 100 == 0:
            report(f"step {step} t {time.monotonic() - started:.0f}s loss {sum(losses[-100:]) / 100:.3f}")
        if step % args.eval_every == 0:
            single = json.dumps(first_token_accuracy_by_question(model, processor, single_cases, device))
            task = (
                ""
                if recipe.get("data") == "shape_single"
                else (f"task {json.dumps(first_token_accuracy_by_question(model, processor, task_cases, device))} ")
            )
            report(f"EVAL step {step} {task}single {single}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", help="variant names (several run as parallel processes)")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="data workers per variant")
    parser.add_argument("--out", type=Path, default=Path("/tmp/demo-sweep"), help="sweep.log goes here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.list or not args.variants:
        print("\n".join(f"{name}: {json.dumps(recipe)}" for name, recipe in VARIANTS.items()))
        return
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; --list shows them")
    args.out.mkdir(parents=True, exist_ok=True)
    if len(args.variants) == 1:
        run_variant(args.variants[0], args)
        return
    shared = ["--steps", str(args.steps), "--eval-every", str(args.eval_every), "--workers", str(args.workers)]
    shared += ["--out", str(args.out), "--device", args.device]
    processes = [subprocess.Popen([sys.executable, __file__, name, *shared]) for name in args.variants]
    sys.exit(max(process.wait() for process in processes))


if __name__ == "__main__":
    main()
