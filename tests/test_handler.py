"""handler.py: the Inference Endpoints entry point answers like `generate()` on the same chat."""

import base64
import io

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, load_script
from PIL import Image


BOX = {"type": "box", "xyxy": [20, 20, 120, 90], "color": "red"}


def load_handler_class():
    return load_script(REPO_ROOT / "handler.py").EndpointHandler


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 240, 3), dtype=np.uint8))


def encoded(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def expected_answer(folder, photo, question, visual_prompts, max_new_tokens) -> str:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    block = {"type": "image", "image": photo, "visual_prompts": visual_prompts}
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [block, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(output[0, inputs.input_ids.shape[1] :], skip_special_tokens=True).strip()


@pytest.mark.parametrize("folder_name", ["tiny", "demo"])
def test_handler_answers_what_generate_answers_with_the_visual_prompt(folder_name, tiny_checkpoint, photo):
    folder = tiny_checkpoint if folder_name == "tiny" else REPO_ROOT / "demo"
    handler = load_handler_class()(str(folder))
    request = {
        "inputs": {"image": encoded(photo), "question": "What is in the red box?", "visual_prompts": [BOX]},
        "parameters": {"max_new_tokens": 6, "do_sample": False},
    }
    answer = handler(request)["generated_text"]
    assert answer == expected_answer(folder, photo, "What is in the red box?", [BOX], 6)
    without_prompt = {**request, "inputs": {**request["inputs"], "visual_prompts": None}}
    assert handler(without_prompt)["generated_text"] == expected_answer(
        folder, photo, "What is in the red box?", None, 6
    )


@pytest.mark.parametrize(
    "request_body, message",
    [
        ({"inputs": "hi"}, r"inputs: expected a dict"),
        ({"inputs": {"image": "not base64!", "question": "Q?"}}, r"inputs\['image'\]: not a base64-encoded image"),
        ({"inputs": {"image": "aGk=", "question": ""}}, r"inputs\['question'\]: expected a non-empty str"),
        ({"inputs": {"question": "Q?"}}, r"inputs\['image'\]: expected a base64 string"),
    ],
)
def test_bad_requests_are_rejected_naming_the_field(tiny_checkpoint, request_body, message):
    handler = load_handler_class()(str(tiny_checkpoint))
    with pytest.raises(ValueError, match=message):
        handler(request_body)
