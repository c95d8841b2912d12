"""Ask Vision-Zephyr about an image, with visual prompts (boxes, ellipses, points, arrows, scribbles, masks) drawn on it.

With a QUESTION it answers once and exits; without one it starts a multi-turn chat (empty line, "exit" or "quit"
ends it). The default model is the tiny demo model in `demo/`, trained on a synthetic shapes task:

    python scripts/chat.py --image examples/demo.png --box 151,43,314,206 "What color is the marked shape?"
"""

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from threading import Thread

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoModelForImageTextToText, AutoProcessor, TextIteratorStreamer


REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / "demo"
EXIT_WORDS = {"", "exit", "quit"}
# What the bundled demo model (v14) was trained on; kept in step with README.md's line on it.
DEMO_MODEL_SCOPE = (
    "The demo model (demo/) knows one synthetic task: 2-4 filled shapes (circle, square, triangle; blue, green,\n"
    'yellow, black) on white, one marked by a red box, ellipse, point or arrow. It answers "What shape is marked?"\n'
    'and "What color is the marked shape?" with one of those seven words; other questions, prompt types, prompt\n'
    "colours and real photos get a guess among the same words."
)
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class UsageError(Exception):
    """A problem with the command line or its files, reported without a traceback."""


def parse_numbers(text: str, flag: str, count: int | None = None) -> list[float]:
    """`"10,20,30,40"` -> `[10.0, 20.0, 30.0, 40.0]`, with an error that names the flag."""
    try:
        numbers = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated numbers, got {text!r}.") from None
    if count is not None and len(numbers) != count:
        raise UsageError(f"{flag} expects {count} comma-separated numbers, got {len(numbers)} in {text!r}.")
    if count is None and (len(numbers) < 4 or len(numbers) % 2):
        raise UsageError(f"{flag} expects an even number (at least 4) of comma-separated numbers, got {text!r}.")
    return numbers


def load_mask(path: str, image_size: tuple[int, int]) -> np.ndarray:
    mask = load_image(path, "--mask").convert("L")
    if mask.size != image_size:
        raise UsageError(
            f"--mask {path} is {mask.size[0]}x{mask.size[1]} but the image is {image_size[0]}x{image_size[1]}."
        )
    return np.asarray(mask) > 127


def visual_prompts_from_args(args: argparse.Namespace, image_size: tuple[int, int]) -> list[dict]:
    """The visual prompts the flags describe, in the order box, ellipse, point, arrow, scribble, mask."""
    style = {"color": args.color}
    prompts = [{"type": "box", "xyxy": parse_numbers(text, "--box", 4), **style} for text in args.box]
    prompts += [{"type": "ellipse", "xyxy": parse_numbers(text, "--ellipse", 4), **style} for text in args.ellipse]
    prompts += [{"type": "point", "xy": parse_numbers(text, "--point", 2), **style} for text in args.point]
    prompts += [{"type": "arrow", "xyxy": parse_numbers(text, "--arrow", 4), **style} for text in args.arrow]
    for text in args.scribble:
        numbers = parse_numbers(text, "--scribble")
        prompts.append(
            {"type": "scribble", "points": [numbers[i : i + 2] for i in range(0, len(numbers), 2)], **style}
        )
    prompts += [{"type": "mask", "mask": load_mask(path, image_size), **style} for path in args.mask]
    return prompts


def load_image(path: str, flag: str = "--image") -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except FileNotFoundError:
        raise UsageError(f"{flag}: no such file: {path}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise UsageError(f"{flag}: cannot read {path} as an image ({error}).") from None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model_and_processor(model_path: str, device: str, dtype: str):
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available; use --device cpu.")
    try:
        processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
        model = AutoModelForImageTextToText.from_pretrained(model_path, trust_remote_code=True, dtype=DTYPES[dtype])
    except OSError as error:
        raise UsageError(f"--model {model_path}: cannot load a Vision-Zephyr checkpoint ({error}).") from None
    return model.to(device).eval(), processor


def draw_prompts_checked(processor, image: Image.Image, visual_prompts: list[dict]) -> Image.Image:
    """The image as the model will see it; a malformed prompt becomes a usage error naming its flag's values."""
    try:
        return processor.draw_visual_prompts(image, visual_prompts)
    except (ValueError, TypeError) as error:
        raise UsageError(f"bad visual prompt: {error}") from None


def answer_pieces(model, processor, messages: list[dict], max_new_tokens: int, temperature: float) -> Iterator[str]:
    """Generates the assistant's reply to `messages` in a background thread, yielding its text piece by piece.

    `temperature` 0 is greedy decoding; the web demo (`space/app.py`) streams through this too.
    """
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    generation = Thread(
        target=model.generate,
        kwargs={**inputs, "streamer": streamer, "max_new_tokens": max_new_tokens, **sampling},
    )
    generation.start()
    yield from streamer
    generation.join()


def stream_answer(model, processor, messages: list[dict], args: argparse.Namespace) -> str:
    """Generates the assistant's reply to `messages`, printing it as it streams, and returns its text."""
    pieces = []
    for piece in answer_pieces(model, processor, messages, args.max_new_tokens, args.temperature):
        print(piece, end="", flush=True)
        pieces.append(piece)
    print()
    return "".join(pieces).strip()


def user_message(text: str, image: Image.Image | None = None, visual_prompts: list[dict] | None = None) -> dict:
    content = [] if image is None else [{"type": "image", "image": image, "visual_prompts": visual_prompts}]
    return {"role": "user", "content": [*content, {"type": "text", "text": text}]}


def chat(model, processor, image: Image.Image, visual_prompts: list[dict], args: argparse.Namespace) -> None:
    """Interactive multi-turn chat; the image (with its prompts) belongs to the first user turn."""
    messages: list[dict] = []
    while True:
        try:
            question = input("user: ").strip()
        except EOFError:
            return
        if question.lower() in EXIT_WORDS:
            return
        first_turn = not messages
        messages.append(user_message(question, image if first_turn else None, visual_prompts if first_turn else None))
        print("assistant: ", end="", flush=True)
        answer = stream_answer(model, processor, messages, args)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=DEMO_MODEL_SCOPE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("question", nargs="?", help="ask once and exit; omit for an interactive chat")
    parser.add_argument("--image", required=True, help="path of the image")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint folder or Hub repo (default: demo/)")
    parser.add_argument("--box", action="append", default=[], metavar="X1,Y1,X2,Y2", help="draw a box (repeatable)")
    parser.add_argument("--ellipse", action="append", default=[], metavar="X1,Y1,X2,Y2", help="draw an ellipse")
    parser.add_argument("--point", action="append", default=[], metavar="X,Y", help="draw a point")
    parser.add_argument("--arrow", action="append", default=[], metavar="X1,Y1,X2,Y2", help="arrow, head at X2,Y2")
    parser.add_argument("--scribble", action="append", default=[], metavar="X,Y,X,Y,...", help="draw a scribble")
    parser.add_argument("--mask", action="append", default=[], metavar="PNG", help="fill a mask (white = inside)")
    parser.add_argument("--color", default="red", help="prompt colour: a name such as red, lime, blue (default red)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="auto")
    parser.add_argument("--save-prompted", metavar="PATH", help="save the image with the prompts drawn on it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        image = load_image(args.image).convert("RGB")
        visual_prompts = visual_prompts_from_args(args, image.size)
        model, processor = load_model_and_processor(args.model, args.device, args.dtype)
        prompted_image = draw_prompts_checked(processor, image, visual_prompts)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.save_prompted:
        prompted_image.save(args.save_prompted)
    if args.question:
        stream_answer(model, processor, [user_message(args.question, image, visual_prompts)], args)
    else:
        chat(model, processor, image, visual_prompts, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
