"""Ask Vision-Zephyr about an image, with visual prompts (boxes, ellipses, points, arrows, scribbles, masks) drawn on it.

With a QUESTION it answers once and exits; without one it starts a multi-turn chat (empty line, "exit" or "quit"
ends it). The default model is the tiny demo model in `demo/`, trained on a synthetic shapes task:

    vision-zephyr chat --image examples/demo.png --box 151,43,314,206 "What color is the marked shape?"
"""

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from threading import Event, Thread

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from vision_zephyr_tools.remote_code import REPO_ROOT


DEFAULT_MODEL = REPO_ROOT / "demo"
EXIT_WORDS = {"", "exit", "quit"}
# What the bundled demo model was trained on; kept in step with README.md's line on it.
DEMO_MODEL_SCOPE = (
    "The demo model (demo/) knows one synthetic task: 2-4 filled shapes (circle, square, triangle; blue, green,\n"
    'yellow, black) on white, one marked by a red box, ellipse, point or arrow. It answers "What shape is marked?"\n'
    'and "What color is the marked shape?" with one of those seven words; other questions, prompt types, prompt\n'
    "colours and real photos get a guess among the same words."
)
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROMPT_FLAGS = ("--box", "--ellipse", "--point", "--arrow", "--scribble", "--mask")
COORDINATE_FLAGS = ("--box", "--ellipse", "--point", "--arrow", "--scribble")
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
RGB_TRIPLE = re.compile(r"\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*")
# What the remote code's prompt validation names ("visual_prompts[2]['xyxy']"): the index of the offending prompt.
PROMPT_FIELD = re.compile(r"visual_prompts\[(\d+)\]\['(\w+)'\]")


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


def prompt_color(text: str) -> str | tuple[int, int, int]:
    """`--color`'s value: a colour name, or `R,G,B` as an RGB triple."""
    triple = RGB_TRIPLE.fullmatch(text)
    return tuple(int(channel) for channel in triple.groups()) if triple else text


def visual_prompts_from_args(args: argparse.Namespace, image_size: tuple[int, int]) -> list[tuple[str, dict]]:
    """The visual prompts the flags describe, in the order box, ellipse, point, arrow, scribble, mask, each with the
    flag and value it came from (`"--box 1,2,3,4"`), so that errors can name what the user typed."""
    style = {"color": prompt_color(args.color)}
    prompts = [
        (f"--box {text}", {"type": "box", "xyxy": parse_numbers(text, "--box", 4), **style}) for text in args.box
    ]
    prompts += [
        (f"--ellipse {text}", {"type": "ellipse", "xyxy": parse_numbers(text, "--ellipse", 4), **style})
        for text in args.ellipse
    ]
    prompts += [
        (f"--point {text}", {"type": "point", "xy": parse_numbers(text, "--point", 2), **style}) for text in args.point
    ]
    prompts += [
        (f"--arrow {text}", {"type": "arrow", "xyxy": parse_numbers(text, "--arrow", 4), **style})
        for text in args.arrow
    ]
    for text in args.scribble:
        numbers = parse_numbers(text, "--scribble")
        points = [numbers[i : i + 2] for i in range(0, len(numbers), 2)]
        prompts.append((f"--scribble {text}", {"type": "scribble", "points": points, **style}))
    prompts += [
        (f"--mask {path}", {"type": "mask", "mask": load_mask(path, image_size), **style}) for path in args.mask
    ]
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


def checked_model_location(model_path: str) -> str:
    """`--model` as given when it is an existing folder or looks like a Hub repo id (`owner/name`); a path that does
    not exist fails here at once, instead of after minutes of retrying the Hub with that name."""
    path = Path(model_path).expanduser()
    if path.exists():
        return model_path
    first_part_is_local = Path(path.parts[0]).exists() if path.parts else False
    if HUB_REPO_ID.fullmatch(model_path) and not first_part_is_local:
        return model_path
    raise UsageError(
        f"--model {model_path}: no such folder (expected a checkpoint folder, or a Hub repo id such as owner/name)."
    )


def load_model_and_processor(model_path: str, device: str, dtype: str):
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available; use --device cpu.")
    model_path = checked_model_location(model_path)
    try:
        processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
        model = AutoModelForImageTextToText.from_pretrained(model_path, trust_remote_code=True, dtype=DTYPES[dtype])
    except OSError as error:
        raise UsageError(f"--model {model_path}: cannot load a Vision-Zephyr checkpoint ({error}).") from None
    return model.to(device).eval(), processor


def flag_error(error: Exception, prompt_sources: list[str], color: str) -> str:
    """The remote code's validation message, with `visual_prompts[i]['key']` replaced by the flag the user typed."""

    def flag(match: re.Match) -> str:
        return f"--color {color}" if match[2] == "color" else prompt_sources[int(match[1])]

    return PROMPT_FIELD.sub(flag, str(error), count=1)


def draw_prompts_checked(processor, image: Image.Image, prompts: list[tuple[str, dict]], color: str) -> Image.Image:
    """The image as the model will see it; a malformed prompt becomes a usage error naming the flag it came from."""
    try:
        return processor.draw_visual_prompts(image, [prompt for _, prompt in prompts])
    except (ValueError, TypeError) as error:
        raise UsageError(f"bad visual prompt: {flag_error(error, [source for source, _ in prompts], color)}") from None


def checked_save_path(path: str | None) -> Path | None:
    """`--save-prompted`'s file, checked before the model loads: its folder must exist and its suffix be a format."""
    if path is None:
        return None
    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise UsageError(f"--save-prompted {path}: the folder {target.parent} does not exist.")
    if target.suffix.lower() not in Image.registered_extensions():
        raise UsageError(f"--save-prompted {path}: expected an image file name ending in .png, .jpg, ...")
    return target


def save_prompted(image: Image.Image, target: Path) -> None:
    try:
        image.save(target)
    except OSError as error:
        raise UsageError(f"--save-prompted {target}: cannot write the image ({error}).") from None


class StopWhenSet(StoppingCriteria):
    """Ends generation at the next token once `event` is set (the reader of the stream went away)."""

    def __init__(self, event: Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def answer_pieces(model, processor, messages: list[dict], max_new_tokens: int, temperature: float) -> Iterator[str]:
    """Generates the assistant's reply to `messages` in a background thread, yielding its text piece by piece.

    `temperature` 0 is greedy decoding; the web demo (`space/app.py`) streams through this too. An error inside
    `generate` (an over-long prompt, say) ends the stream and is raised here, in the reader's thread, so no reader
    waits forever for pieces that will not come. A reader that stops early stops the generation at its next token.
    """
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    reader_gone, failures = Event(), []

    def generate() -> None:
        try:
            model.generate(
                **inputs,
                streamer=streamer,
                max_new_tokens=max_new_tokens,
                stopping_criteria=StoppingCriteriaList([StopWhenSet(reader_gone)]),
                **sampling,
            )
        except Exception as error:
            failures.append(error)
            streamer.end()

    generation = Thread(target=generate, daemon=True)
    generation.start()
    try:
        yield from streamer
    finally:
        reader_gone.set()
        generation.join()
    if failures:
        raise failures[0]


def stream_answer(model, processor, messages: list[dict], args: argparse.Namespace) -> str | None:
    """Generates the assistant's reply to `messages`, printing it as it streams, and returns its text; `None`, with
    the error printed in one line, when generation fails."""
    pieces = []
    try:
        for piece in answer_pieces(model, processor, messages, args.max_new_tokens, args.temperature):
            print(piece, end="", flush=True)
            pieces.append(piece)
    except Exception as error:
        if pieces:
            print(flush=True)
        print(f"error: {error}", file=sys.stderr)
        return None
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
        if answer is None:
            messages.pop()  # the failed question is not part of the conversation; the user may ask another
            continue
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (0 = greedy), got {text}")
    return value


def attach_negative_coordinates(argv: list[str]) -> list[str]:
    """`--box -50,-50,-10,-10` -> `--box=-50,-50,-10,-10`: argparse reads a value that starts with "-" as an option."""
    attached = []
    for token in argv:
        previous = attached[-1] if attached else None
        if previous in COORDINATE_FLAGS and re.fullmatch(r"-[\d.][\d.,\s+-]*", token):
            attached[-1] = f"{previous}={token}"
        else:
            attached.append(token)
    return attached


class OneLineErrorParser(argparse.ArgumentParser):
    """Reports a bad flag in one line (the usage block is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineErrorParser(
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
    parser.add_argument(
        "--color",
        default="red",
        help="prompt colour: red, lime, blue, yellow, fuchsia, aqua, orange, purple, gold, or R,G,B (default red)",
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=256)
    parser.add_argument("--temperature", type=non_negative_float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="auto")
    parser.add_argument("--save-prompted", metavar="PATH", help="save the image with the prompts drawn on it")
    return parser.parse_args(attach_negative_coordinates(sys.argv[1:] if argv is None else argv))


def run(args: argparse.Namespace) -> int:
    image = load_image(args.image).convert("RGB")
    prompts = visual_prompts_from_args(args, image.size)
    save_path = checked_save_path(args.save_prompted)
    model, processor = load_model_and_processor(args.model, args.device, args.dtype)
    prompted_image = draw_prompts_checked(processor, image, prompts, args.color)
    if save_path:
        save_prompted(prompted_image, save_path)
    if not prompts:
        print(
            f"note: no visual prompt ({', '.join(PROMPT_FLAGS)}): the model sees the image unmarked.", file=sys.stderr
        )
    visual_prompts = [prompt for _, prompt in prompts]
    if args.question:
        answered = stream_answer(model, processor, [user_message(args.question, image, visual_prompts)], args)
        return 0 if answered is not None else 1
    chat(model, processor, image, visual_prompts, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
