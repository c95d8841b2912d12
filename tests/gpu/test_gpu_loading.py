"""CUDA-only loading paths: bitsandbytes 8-bit / 4-bit and flash-attention 2, each generating from an image prompt.

Skipped (with the reason) on machines without CUDA, `bitsandbytes` or `flash_attn`. Run on a GPU machine with
`pip install bitsandbytes flash-attn` and `python -m pytest -q tests/gpu`.
"""

import pytest
import torch
from conftest import image_inputs, prompt_ids
from transformers import AutoModelForImageTextToText, BitsAndBytesConfig
from transformers.utils import is_bitsandbytes_available, is_flash_attn_2_available


def needs_cuda_and(package: str, available: bool) -> pytest.MarkDecorator:
    """Skips with the first missing requirement as the reason: the GPU, then the package."""
    if not torch.cuda.is_available():
        return pytest.mark.skip(reason="needs a CUDA GPU")
    return pytest.mark.skipif(not available, reason=f"needs `pip install {package}`")


needs_bitsandbytes = needs_cuda_and("bitsandbytes", is_bitsandbytes_available())
needs_flash_attn = needs_cuda_and("flash-attn", is_flash_attn_2_available())

NEW_TOKENS = 4
# Quantize the language model only; the CLIP tower and the Q-Former are small and precision-sensitive.
KEEP_UNQUANTIZED = ["vision_tower", "multi_modal_projector", "lm_head"]


@pytest.fixture(scope="module")
def image_batch() -> dict[str, torch.Tensor]:
    batch = {"input_ids": torch.tensor([prompt_ids(6, 96)]), **image_inputs([(1, 2)])}
    return {name: tensor.to("cuda") for name, tensor in batch.items()}


def generate(model, batch) -> torch.Tensor:
    inputs = {**batch, "pixel_values": batch["pixel_values"].to(model.dtype)}
    output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return output[:, batch["input_ids"].shape[1] :]


def load(checkpoint, **kwargs):
    return AutoModelForImageTextToText.from_pretrained(
        checkpoint, trust_remote_code=True, device_map="cuda", **kwargs
    ).eval()


@needs_bitsandbytes
@pytest.mark.parametrize(
    "quantization, linear_class",
    [
        (BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=KEEP_UNQUANTIZED), "Linear8bitLt"),
        (
            BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
                llm_int8_skip_modules=KEEP_UNQUANTIZED,
            ),
            "Linear4bit",
        ),
    ],
    ids=["8bit", "4bit"],
)
def test_quantized_model_generates(tiny_checkpoint, image_batch, quantization, linear_class):
    model = load(tiny_checkpoint, quantization_config=quantization)
    q_proj = model.model.language_model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == linear_class, f"the LM should be quantized, got {type(q_proj).__name__}"
    assert type(model.model.multi_modal_projector.layers[0].mlp.fc1) is torch.nn.Linear
    new_tokens = generate(model, image_batch)
    assert new_tokens.shape == (1, NEW_TOKENS)


@needs_flash_attn
def test_flash_attention_2_generates_like_sdpa(tiny_checkpoint, image_batch):
    flash = load(tiny_checkpoint, dtype=torch.bfloat16, attn_implementation="flash_attention_2")
    assert flash.model.language_model.config._attn_implementation == "flash_attention_2"
    sdpa = load(tiny_checkpoint, dtype=torch.bfloat16, attn_implementation="sdpa")
    with torch.no_grad():
        flash_logits = flash(**{**image_batch, "pixel_values": image_batch["pixel_values"].bfloat16()}).logits
        sdpa_logits = sdpa(**{**image_batch, "pixel_values": image_batch["pixel_values"].bfloat16()}).logits
    torch.testing.assert_close(flash_logits.float(), sdpa_logits.float(), rtol=0.05, atol=0.05)
    assert generate(flash, image_batch).shape == (1, NEW_TOKENS)
