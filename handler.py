"""Custom inference code for Hugging Face Inference Endpoints (the Hub's `handler.py` / `EndpointHandler` convention).

Request: `{"inputs": {"image": "<base64>", "question": "...", "visual_prompts": [...]}, "parameters": {...}}`, where
`visual_prompts` (optional) is one image's list of prompt dicts (see `visual_prompts.py`) and `parameters` are
`generate()` arguments (`max_new_tokens`, `do_sample`, `temperature`, ...). Response: `{"generated_text": answer}`.
"""

import base64
import binascii
import io
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor


class EndpointHandler:
    """Loads the model and processor of the repository at `path` and answers one image question per request."""

    def __init__(self, path: str = ""):
        self.processor = AutoProcessor.from_pretrained(path or ".", trust_remote_code=True)
        self.model = AutoModelForImageTextToText.from_pretrained(path or ".", trust_remote_code=True).eval()

    def __call__(self, data: dict[str, Any]) -> dict[str, str]:
        inputs = data.get("inputs")
        if not isinstance(inputs, dict):
            raise ValueError(f"inputs: expected a dict with 'image' (base64) and 'question', got {inputs!r:.80}")
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError(f"parameters: expected a dict of generate() arguments, got {parameters!r:.80}")
        question = inputs.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"inputs['question']: expected a non-empty str, got {question!r:.80}")
        image_block = {"type": "image", "image": decode_image(inputs.get("image"))}
        if inputs.get("visual_prompts") is not None:
            image_block["visual_prompts"] = inputs["visual_prompts"]
        conversation = [{"role": "user", "content": [image_block, {"type": "text", "text": question}]}]
        model_inputs = self.processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.inference_mode():
            output = self.model.generate(**model_inputs, **parameters)
        answer = self.processor.decode(output[0, model_inputs.input_ids.shape[1] :], skip_special_tokens=True)
        return {"generated_text": answer.strip()}


def decode_image(encoded: Any) -> Image.Image:
    """A PIL image from base64 (plain or a `data:` URL)."""
    if not isinstance(encoded, str):
        raise ValueError(f"inputs['image']: expected a base64 string, got {type(encoded).__name__}")
    try:
        raw = base64.b64decode(encoded.split(",", 1)[1] if encoded.startswith("data:") else encoded, validate=True)
        return Image.open(io.BytesIO(raw)).convert("RGB")
    except (binascii.Error, OSError) as error:
        raise ValueError(f"inputs['image']: not a base64-encoded image ({error})") from error
