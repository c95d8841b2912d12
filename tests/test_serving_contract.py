"""The rules serving engines' transformers backends rely on (vLLM, SGLang): flags, lookups, signature, kwargs.

Those backends load the model with `trust_remote_code`, swap in their own attention through transformers' attention
registry, call `get_image_features` themselves and pass their per-batch state as extra keyword arguments that must
arrive, untouched, at every attention call.
"""

import inspect

import pytest
import torch
from conftest import image_inputs, prompt_ids
from transformers import AttentionInterface, AutoModelForImageTextToText
from transformers.integrations.sdpa_attention import sdpa_attention_forward


RECORDING_ATTENTION = "vis_zephyr_test_recording"
STANDARD_FORWARD_ARGUMENTS = [
    "input_ids",
    "pixel_values",
    "attention_mask",
    "position_ids",
    "past_key_values",
    "inputs_embeds",
    "labels",
    "use_cache",
    "logits_to_keep",
    "kwargs",
]
attention_calls: list[dict] = []


def recording_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA that remembers who called it with which extra keyword arguments (an engine's attention stand-in)."""
    attention_calls.append({"module": type(module).__name__, **kwargs})
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


@pytest.fixture(scope="module")
def recording_model(tiny_checkpoint):
    AttentionInterface.register(RECORDING_ATTENTION, recording_attention)
    return AutoModelForImageTextToText.from_pretrained(
        tiny_checkpoint, trust_remote_code=True, attn_implementation=RECORDING_ATTENTION
    ).eval()


def calls_with_marker(marker: str) -> list[str]:
    return [call["module"] for call in attention_calls if call.get("engine_state") == marker]


def test_model_declares_the_flags_serving_backends_check(tiny_model):
    assert tiny_model._supports_attention_backend is True
    assert tiny_model._supports_sdpa is True and tiny_model._supports_flash_attn is True
    assert tiny_model.base_model_prefix == "model"
    assert type(tiny_model.base_model).__name__ == "VisionZephyrModel"


def test_encoder_and_decoder_lookups_find_the_vision_tower_and_the_language_model(tiny_model):
    assert tiny_model.get_encoder(modality="image") is tiny_model.model.vision_tower
    assert tiny_model.get_decoder() is tiny_model.model.language_model


def test_forward_has_the_standard_signature(tiny_model):
    parameters = inspect.signature(type(tiny_model).forward).parameters
    missing = [name for name in STANDARD_FORWARD_ARGUMENTS if name not in parameters]
    assert not missing, f"forward lacks {missing}"
    assert parameters["kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    assert "cache_position" not in parameters, "transformers 5 no longer passes cache_position"


def test_extra_kwargs_reach_every_language_model_attention_call(recording_model):
    attention_calls.clear()
    with torch.no_grad():
        recording_model(input_ids=torch.tensor([[1, 400, 500, 600]]), engine_state="text")
    layers = recording_model.config.text_config.num_hidden_layers
    assert calls_with_marker("text") == ["MistralAttention"] * layers


def test_extra_kwargs_reach_every_vision_tower_attention_call_through_get_image_features(recording_model):
    attention_calls.clear()
    with torch.no_grad():
        recording_model.get_image_features(**image_inputs([(1, 2)]), engine_state="image")
    layers = recording_model.config.vision_config.num_hidden_layers
    assert calls_with_marker("image") == ["CLIPAttention"] * layers


def test_engine_style_call_with_merged_inputs_embeds_equals_the_pixel_call(tiny_checkpoint):
    """Engines embed the text, scatter `get_image_features` into the placeholders and call the LM with embeddings.

    That equals the model's own path only without text conditioning (the Q-Former would need the prompt text,
    which `get_image_features` is not given by engines): see docs/ecosystem.md.
    """
    model = AutoModelForImageTextToText.from_pretrained(
        tiny_checkpoint, trust_remote_code=True, qformer_text_conditioning=False
    ).eval()
    images = image_inputs([(1, 2)])
    input_ids = torch.tensor([prompt_ids(6, 96)])
    with torch.no_grad():
        features = torch.cat(model.get_image_features(**images).pooler_output)
        embeddings = model.get_input_embeddings()(input_ids)
        placeholders = model.model.get_placeholder_mask(input_ids, embeddings).unsqueeze(-1)
        engine_logits = model(inputs_embeds=embeddings.masked_scatter(placeholders, features)).logits
        expected = model(input_ids=input_ids, **images).logits
    torch.testing.assert_close(engine_logits, expected)
