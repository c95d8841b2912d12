"""`vision-zephyr COMMAND ...`: every tool of the repository behind one command.

Each command is one module of this package with its own argument parser (`vision-zephyr COMMAND --help`), run
exactly as `python -m MODULE ...` runs it; `python -m` is what launchers that start a module need
(`accelerate launch -m vision_zephyr_tools.training.train ...`, `torchrun -m ...`).
"""

import argparse
import importlib
import sys


# command: (module, what it does)
COMMANDS = {
    "chat": ("vision_zephyr_tools.chat", "ask the model about an image, with visual prompts drawn on it"),
    "convert": (
        "vision_zephyr_tools.conversion.convert_original_checkpoint",
        "build the Hub checkpoint from the original release (Zephyr-7B-beta + CLIP + mm_projector.bin)",
    ),
    "make-tiny-checkpoint": (
        "vision_zephyr_tools.conversion.make_tiny_checkpoint",
        "write a complete checkpoint folder with tiny random weights",
    ),
    "build-tokenizer": (
        "vision_zephyr_tools.conversion.build_tokenizer",
        "regenerate the root tokenizer.json and tokenizer_config.json",
    ),
    "train": ("vision_zephyr_tools.training.train", "train with transformers' Trainer on LLaVA-format or VCR data"),
    "evaluate": ("vision_zephyr_tools.evaluation", "score a model on VCR and MMBench"),
    "demo-task": ("vision_zephyr_tools.demo_model.demo_task", "draw cases of the demo model's shapes task"),
    "train-demo": ("vision_zephyr_tools.demo_model.train_demo", "train the tiny demo model (demo/) on CPU"),
    "eval-demo": ("vision_zephyr_tools.demo_model.eval_demo", "score the demo model on fresh cases of its task"),
    "render-visual-prompts": (
        "vision_zephyr_tools.render_visual_prompts_example",
        "redraw docs/visual_prompts.png, one visual prompt of every type",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="vision-zephyr",
        description=__doc__.split("\n\n")[0],
        epilog=f"commands:\n{listing}\n\n`vision-zephyr COMMAND --help` shows a command's own options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="one of the commands below")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Only the command name is parsed here: everything after it belongs to the command's own parser.
    command = build_parser().parse_args(argv[:1]).command
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [f"vision-zephyr {command}", *argv[1:]]
    status = module.main()
    # chat returns its exit status; the other tools return nothing or their results.
    return status if isinstance(status, int) else 0
