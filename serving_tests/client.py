"""What a client of the served model sends, shared by the serving tests (the README's request does the same)."""

import base64
import io

from conftest import conversation
from PIL import Image


def client_request(processor, images: list, question: str) -> tuple[list[Image.Image], str]:
    """The images with their visual prompts drawn (exactly as the processor draws them) and the rendered prompt.

    The prompt also goes in `mm_processor_kwargs={"qformer_text": prompt}`: vLLM calls the processor with placeholder
    text only, and the Q-Former reads the prompt's text.
    """
    drawn = [processor.draw_visual_prompts(image, prompts) for image, prompts in images]
    prompt = processor.apply_chat_template(
        conversation([(image, None) for image in drawn], question), add_generation_prompt=True
    )
    return drawn, prompt


def png_data_url(image: Image.Image) -> str:
    """A lossless data URL, so the server sees the client's pixels."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
