"""Web demo of Vision-Zephyr: draw visual prompts on an image with the mouse, ask about them, watch the answer stream.

The image on the right is drawn by the processor's own `draw_visual_prompts`, so it is exactly what the model sees.
Box, ellipse and arrow take two clicks (corners; tail then head), a point one click, a scribble one click per point
and then "Finish scribble"; masks are painted with the brush. The "copy as code" box shows the same request through
the Python API.

    python space/app.py                      # the bundled demo model from demo/, on http://127.0.0.1:7860
    VIS_ZEPHYR_MODEL=path/or/hub-id python space/app.py --port 8000
"""

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# The chat CLI holds the loading and streaming code: installed from the repository (requirements.txt), or its
# `vision_zephyr_tools/` folder copied next to this file in a Space.
from vision_zephyr_tools import chat


REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "examples"
CLICK_PROMPT_TYPES = ("box", "ellipse", "arrow", "point", "scribble")
MASK_PROMPT_TYPES = ("mask", "mask_contour")
TWO_CLICK_TYPES = ("box", "ellipse", "arrow")
SECOND_CLICK_HINTS = {"box": "the opposite corner", "ellipse": "the opposite corner", "arrow": "the head (tip)"}
FIRST_CLICK_HINTS = {"box": "a corner", "ellipse": "a corner of its bounding box", "arrow": "the tail", "point": "it"}
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the demo also runs offline
MONOSPACE_FONTS = ["ui-monospace", "monospace"]

Turn = tuple[str, str]  # (question, answer)


def prompt_from_clicks(prompt_type: str, clicks: list[list[int]], color: str) -> dict:
    """The visual prompt dict (the processor's format) that the clicks on the image describe."""
    if prompt_type == "point":
        return {"type": "point", "xy": clicks[0], "color": color}
    if prompt_type == "scribble":
        return {"type": "scribble", "points": clicks, "color": color}
    (x1, y1), (x2, y2) = clicks
    # An arrow keeps its direction; box and ellipse corners may be clicked in any order.
    xyxy = [x1, y1, x2, y2] if prompt_type == "arrow" else [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
    return {"type": prompt_type, "xyxy": xyxy, "color": color}


def mask_from_editor(editor_value: dict | None, image_size: tuple[int, int]) -> np.ndarray | None:
    """The painted pixels of the brush layers as an H×W bool mask of the image's size; `None` when nothing is painted."""
    layers = (editor_value or {}).get("layers") or []
    painted = [layer[..., 3] > 0 for layer in layers if layer is not None and layer.ndim == 3 and layer.shape[2] == 4]
    if not painted or not any(layer.any() for layer in painted):
        return None
    mask = np.logical_or.reduce(painted)
    if mask.shape != (image_size[1], image_size[0]):
        mask = np.asarray(Image.fromarray(mask).resize(image_size, Image.Resampling.NEAREST))
    return mask


def placed_count(prompts: list[dict]) -> str:
    return f"{len(prompts)} prompt{'s' if len(prompts) != 1 else ''} placed."


def with_article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def click_status(prompt_type: str, clicks: list[list[int]], prompts: list[dict]) -> str:
    """What the last click did and what the next one will do."""
    placed = placed_count(prompts)
    if prompt_type == "scribble":
        return f"{placed} Scribble: {len(clicks)} point(s) so far; click more points, then **Finish scribble**."
    if clicks:
        x, y = clicks[0]
        return (
            f"{placed} {prompt_type.capitalize()}: first click at ({x}, {y}); click {SECOND_CLICK_HINTS[prompt_type]}."
        )
    return f"{placed} Click {FIRST_CLICK_HINTS[prompt_type]} to place {with_article(prompt_type)}."


def chat_messages(turns: list[Turn], question: str, image: Image.Image, prompts: list[dict]) -> list[dict]:
    """The conversation as chat messages; the image and its prompts belong to the first user turn."""
    messages = []
    for index, (asked, answered) in enumerate(turns):
        messages.append(chat.user_message(asked, image if index == 0 else None, prompts if index == 0 else None))
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answered}]})
    first_turn = not turns
    messages.append(chat.user_message(question, image if first_turn else None, prompts if first_turn else None))
    return messages


def prompt_source(prompt: dict) -> str:
    fields = ", ".join(f'"{key}": {"..." if key == "mask" else json.dumps(value)}' for key, value in prompt.items())
    return "{" + fields + "}," + ("  # ...: the H×W bool array you painted" if "mask" in prompt else "")


def messages_source(turns: list[Turn], question: str) -> str:
    image_block = '{"type": "image", "image": image, "visual_prompts": visual_prompts}, '
    lines = []
    for index, (asked, answered) in enumerate([*turns, (question, None)]):
        blocks = (image_block if index == 0 else "") + f'{{"type": "text", "text": {json.dumps(asked)}}}'
        lines.append(f'    {{"role": "user", "content": [{blocks}]}},')
        if answered is not None:
            lines.append(
                f'    {{"role": "assistant", "content": [{{"type": "text", "text": {json.dumps(answered)}}}]}},'
            )
    return "messages = [\n" + "\n".join(lines) + "\n]"


def model_loading_source(model) -> str:
    """The line that loads the model as the page did; dtype and device appear only when not float32 on the CPU."""
    dtype = str(model.dtype).removeprefix("torch.")
    options = "" if dtype == "float32" else f", dtype=torch.{dtype}"
    placement = "" if model.device.type == "cpu" else f'.to("{model.device}")'
    return f"model = AutoModelForImageTextToText.from_pretrained(repo, trust_remote_code=True{options}){placement}"


def code_for(
    model_name: str,
    model_line: str,
    image_name: str,
    prompts: list[dict],
    turns: list[Turn],
    question: str,
    max_new_tokens: int,
    temperature: float,
) -> str:
    """The Python API call that asks the model the same thing as the page: same image, prompts, history, settings."""
    prompt_lines = "".join(f"    {prompt_source(prompt)}\n" for prompt in prompts)
    sampling = f"do_sample=True, temperature={temperature}" if temperature > 0 else "do_sample=False"
    torch_import = "import torch\n" if "torch." in model_line else ""
    return f"""{torch_import}from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

repo = {json.dumps(model_name)}
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
{model_line}

image = Image.open({json.dumps(image_name)}).convert("RGB")
visual_prompts = [
{prompt_lines}]
{messages_source(turns, question)}
inputs = processor.apply_chat_template(
    messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
).to(model.device)
output = model.generate(**inputs, max_new_tokens={max_new_tokens}, {sampling})
print(processor.post_process_image_text_to_text(output[:, inputs["input_ids"].shape[1] :])[0])
"""


def chatbot_messages(turns: list[Turn]) -> list[dict]:
    return [
        message
        for asked, answered in turns
        for message in ({"role": "user", "content": asked}, {"role": "assistant", "content": answered})
    ]


def display_name(model_path: str) -> str:
    """How the code box names the checkpoint: relative to the repository when it is inside it."""
    path = Path(model_path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else model_path


def default_dtype(device: str) -> str:
    return "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "auto"


def prompt_colors(processor) -> list[str]:
    """The colour names the processor's own `visual_prompts` module accepts (the remote code loaded with it)."""
    package = type(processor).__module__.rpartition(".")[0]
    return list(importlib.import_module(".visual_prompts", package).VISUAL_PROMPT_COLORS)


def example_images() -> list[str]:
    """The bundled example images (not their already-prompted renderings); none in a Space without examples/."""
    return [str(path) for path in sorted(EXAMPLES_DIR.glob("*.png")) if not path.stem.endswith("_prompted")]


class UploadedImage(gr.Image):
    """The image upload. gradio decodes an upload before any handler runs, so a file that is not an image failed
    with a bare "Error" on every output; here it reaches `WebDemo.new_image`, which says what is wrong."""

    is_template = True  # rendered by gradio's own Image component

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except (UnidentifiedImageError, OSError):
            return str(payload.path)


def failed_turn(turns: list[Turn], question: str, error: Exception) -> list[dict]:
    """The chat with the failed question and its error shown as the reply (the turn is not kept in the history)."""
    return [
        *chatbot_messages(turns),
        {"role": "user", "content": question},
        {"role": "assistant", "content": f"⚠️ {error}"},
    ]


class WebDemo:
    """The page's event handlers, around one loaded model and processor.

    Args:
        model: A loaded Vision-Zephyr model.
        processor: Its processor; draws the visual prompts shown on the page.
        model_name (`str`): How the "copy as code" box names the checkpoint.
    """

    def __init__(self, model, processor, model_name: str):
        self.model = model
        self.processor = processor
        self.model_name = model_name
        self.model_line = model_loading_source(model)
        self.default_max_new_tokens = model.generation_config.max_new_tokens or 256

    def drawn(
        self, image_path: str | None, prompts: list[dict], pending: list[list[int]] = (), color: str = "red"
    ) -> Image.Image | None:
        """The image with its prompts, as the model sees it, plus a dot at each click of a prompt not yet complete."""
        if image_path is None:
            return None
        clicked = [{"type": "point", "xy": xy, "color": color} for xy in pending]
        return self.processor.draw_visual_prompts(chat.load_image(image_path).convert("RGB"), [*prompts, *clicked])

    def code(self, image_path, prompts, turns, question, max_new_tokens, temperature) -> str:
        """The call for the question being typed, or else the one that reproduces the last answer."""
        image_name = Path(image_path).name if image_path else "photo.jpg"
        if question.strip():
            history, asked = turns, question.strip()
        elif turns:
            history, asked = turns[:-1], turns[-1][0]
        else:
            history, asked = [], "Your question"
        return code_for(
            self.model_name, self.model_line, image_name, prompts, history, asked, max_new_tokens, temperature
        )

    def new_image(self, image_path, prompt_type, max_new_tokens, temperature):
        """A new image starts over: no prompts, no pending clicks, no conversation."""
        code = self.code(image_path, [], [], "", max_new_tokens, temperature)
        try:
            canvas = self.drawn(image_path, [])
        except chat.UsageError as error:
            return None, [], [], [], [], None, f"**This file cannot be used:** {error}", code
        editor = {"background": image_path, "layers": [], "composite": None} if image_path else None
        status = click_status(prompt_type, [], []) if image_path else "Upload an image or pick an example."
        return canvas, [], [], [], [], editor, status, code

    def click(self, image_path, prompts, clicks, prompt_type, color, evt: gr.SelectData):
        clicks = [*clicks, [int(evt.index[0]), int(evt.index[1])]]
        complete = prompt_type == "point" or (prompt_type in TWO_CLICK_TYPES and len(clicks) == 2)
        if complete:
            prompts, clicks = [*prompts, prompt_from_clicks(prompt_type, clicks, color)], []
        drawn = self.drawn(image_path, prompts, clicks, color)
        return drawn, prompts, clicks, click_status(prompt_type, clicks, prompts)

    def finish_scribble(self, image_path, prompts, clicks, color):
        if len(clicks) < 2:
            return gr.skip(), prompts, clicks, "A scribble needs at least two clicked points."
        prompts = [*prompts, prompt_from_clicks("scribble", clicks, color)]
        return self.drawn(image_path, prompts), prompts, [], click_status("scribble", [], prompts)

    def add_mask(self, image_path, prompts, editor_value, mask_type, color):
        if image_path is None:
            return gr.skip(), prompts, "Upload an image first."
        mask = mask_from_editor(editor_value, chat.load_image(image_path).size)
        if mask is None:
            return gr.skip(), prompts, "Paint over the object with the brush first."
        prompts = [*prompts, {"type": mask_type, "mask": mask, "color": color}]
        return self.drawn(image_path, prompts), prompts, f"{placed_count(prompts)} The last one is painted."

    def undo(self, image_path, prompts, clicks, prompt_type, color):
        """Drops the last pending click, or else the last placed prompt."""
        if clicks:
            clicks = clicks[:-1]
        else:
            prompts = prompts[:-1]
        drawn = self.drawn(image_path, prompts, clicks, color)
        return drawn, prompts, clicks, click_status(prompt_type, clicks, prompts)

    def prompts_changed(self, prompts, turns, status):
        """A conversation is about the prompts it was asked with: changing them starts a new one, so no earlier
        answer (nor the "copy as code" box) is shown next to prompts it was not about."""
        if not turns:
            return gr.skip(), gr.skip(), gr.skip()
        return [], [], f"{status} The chat was cleared: its answers were about the earlier prompts."

    def clear_prompts(self, image_path, prompt_type):
        return self.drawn(image_path, []), [], [], click_status(prompt_type, [], [])

    def ask(self, question, turns, image_path, prompts, max_new_tokens, temperature) -> Iterator[tuple]:
        """Streams the answer into the chat; the whole conversation is about the image with its current prompts."""
        question = question.strip()
        if not image_path or not question:
            yield gr.skip(), turns, question, "Upload an image and type a question first."
            return
        started, answer = time.perf_counter(), ""
        try:
            image = chat.load_image(image_path).convert("RGB")
            messages = chat_messages(turns, question, image, prompts)
            for piece in chat.answer_pieces(self.model, self.processor, messages, int(max_new_tokens), temperature):
                answer += piece
                yield chatbot_messages([*turns, (question, answer)]), turns, "", "Answering…"
        except Exception as error:  # shown on the page; the question stays in the box to be edited
            yield failed_turn(turns, question, error), turns, question, f"**Not answered:** {error}"
            return
        turns = [*turns, (question, answer.strip())]
        status = f"Turn {len(turns)} answered in {time.perf_counter() - started:.1f} s."
        yield chatbot_messages(turns), turns, "", status


def build_page(demo: WebDemo) -> gr.Blocks:
    with gr.Blocks(title="Vision-Zephyr", analytics_enabled=False) as page:
        gr.Markdown("# Vision-Zephyr\nDraw visual prompts on an image, then ask about them.")
        prompts, clicks, turns = gr.State([]), gr.State([]), gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                image_input = UploadedImage(
                    label="Image", type="filepath", sources=["upload", "clipboard"], elem_id="image"
                )
                if example_images():
                    gr.Examples(example_images(), inputs=image_input, label="Examples")
                prompt_type = gr.Radio(
                    list(CLICK_PROMPT_TYPES), value="box", label="Prompt type", elem_id="prompt-type"
                )
                color = gr.Dropdown(prompt_colors(demo.processor), value="red", label="Colour", elem_id="color")
                with gr.Row():
                    undo = gr.Button("Undo", elem_id="undo")
                    clear = gr.Button("Clear prompts", elem_id="clear")
                    finish = gr.Button("Finish scribble", elem_id="finish-scribble")
                with gr.Accordion("Paint a mask with the brush", open=False):
                    editor = gr.ImageEditor(
                        type="numpy", sources=[], layers=False, transforms=[], label="Paint over the object"
                    )
                    mask_type = gr.Radio(list(MASK_PROMPT_TYPES), value="mask", label="Draw the painted area as")
                    add_mask = gr.Button("Add painted mask")
            with gr.Column(scale=2):
                canvas = gr.Image(
                    label="What the model sees: click to place prompts",
                    type="pil",
                    format="png",
                    interactive=False,
                    elem_id="canvas",
                )
                status = gr.Markdown("Upload an image or pick an example.", elem_id="status")
        with gr.Row():
            with gr.Column():
                chatbot = gr.Chatbot(label="Chat", elem_id="chat", height=320)
                question = gr.Textbox(label="Question", placeholder="What shape is marked?", elem_id="question")
                with gr.Row():
                    send = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear_chat = gr.Button("Clear chat", elem_id="clear-chat")
                with gr.Accordion("Generation settings", open=False):
                    max_new_tokens = gr.Slider(
                        1, 2048, value=demo.default_max_new_tokens, step=1, label="Max new tokens"
                    )
                    temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature (0 = greedy)")
            with gr.Column():
                code = gr.Code(
                    language="python", label="Copy as code", elem_id="code", interactive=False, wrap_lines=True
                )

        settings = [max_new_tokens, temperature]
        image_input.change(
            demo.new_image,
            [image_input, prompt_type, *settings],
            [canvas, prompts, clicks, turns, chatbot, editor, status, code],
        )
        # Quick clicks must all count: no progress overlay covers the picture, every prompt edit is queued
        # ("multiple") and they run one at a time (one concurrency id), each reading the server-side states as the
        # previous edit left them.
        edit = {
            "trigger_mode": "multiple",
            "concurrency_id": "prompt-edits",
            "concurrency_limit": 1,
            "show_progress": "hidden",
        }
        canvas.select(
            demo.click, [image_input, prompts, clicks, prompt_type, color], [canvas, prompts, clicks, status], **edit
        )
        prompt_type.change(
            lambda kind, placed: ([], click_status(kind, [], placed)), [prompt_type, prompts], [clicks, status], **edit
        )
        finish.click(
            demo.finish_scribble, [image_input, prompts, clicks, color], [canvas, prompts, clicks, status], **edit
        )
        add_mask.click(
            demo.add_mask, [image_input, prompts, editor, mask_type, color], [canvas, prompts, status], **edit
        )
        undo.click(
            demo.undo, [image_input, prompts, clicks, prompt_type, color], [canvas, prompts, clicks, status], **edit
        )
        prompts.change(demo.prompts_changed, [prompts, turns, status], [chatbot, turns, status], **edit)
        clear.click(demo.clear_prompts, [image_input, prompt_type], [canvas, prompts, clicks, status], **edit)
        ask_inputs = [question, turns, image_input, prompts, *settings]
        ask_outputs = [chatbot, turns, question, status]
        send.click(demo.ask, ask_inputs, ask_outputs)
        question.submit(demo.ask, ask_inputs, ask_outputs)
        clear_chat.click(lambda: ([], []), None, [chatbot, turns])
        code_inputs = [image_input, prompts, turns, question, *settings]
        for trigger in (prompts.change, turns.change, question.change, max_new_tokens.change, temperature.change):
            trigger(demo.code, code_inputs, code)
    return page


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=os.environ.get("VIS_ZEPHYR_MODEL", str(chat.DEFAULT_MODEL)),
        help="checkpoint folder or Hub repo (default: $VIS_ZEPHYR_MODEL, else demo/)",
    )
    parser.add_argument("--device", default=chat.default_device(), help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--dtype",
        choices=sorted(chat.DTYPES),
        help="default: bfloat16 on a GPU that supports it, else the checkpoint's",
    )
    parser.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model, processor = chat.load_model_and_processor(
            args.model, args.device, args.dtype or default_dtype(args.device)
        )
    except chat.UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    page = build_page(WebDemo(model, processor, display_name(args.model)))
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONOSPACE_FONTS)
    page.queue().launch(server_name=args.host, server_port=args.port, theme=theme, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
