"""What a client of the served model sends (vLLM's offline `LLM` or its OpenAI-compatible server).

The serving tests and `benchmarks/bench_serving.py` build their requests with these; the README's request does the
same by hand.
"""

import base64
import io

from PIL import Image


def user_turn(images: list[tuple[Image.Image, list[dict] | None]], question: str) -> list[dict]:
    """One user message: each image with its visual prompts (or None), then the question."""
    blocks = [{"type": "image", "image": image, "visual_prompts": prompts} for image, prompts in images]
    return [{"role": "user", "content": [*blocks, {"type": "text", "text": question}]}]


def client_request(
    processor, images: list[tuple[Image.Image, list[dict] | None]], question: str
) -> tuple[list[Image.Image], str]:
    """The images with their visual prompts drawn (exactly as the processor draws them) and the rendered prompt.

    The prompt also goes in `mm_processor_kwargs={"qformer_text": prompt}`: vLLM calls the processor with placeholder
    text only, and the Q-Former reads the prompt's text.
    """
    drawn = [processor.draw_visual_prompts(image, prompts) for image, prompts in images]
    prompt = processor.apply_chat_template(
        user_turn([(image, None) for image in drawn], question), add_generation_prompt=True
    )
    return drawn, prompt


def png_data_url(image: Image.Image) -> str:
    """A lossless data URL, so the server sees the client's pixels."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
