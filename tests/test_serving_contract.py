"""The rules serving engines' transformers backends rely on (vLLM, SGLang): flags, lookups, signature, kwargs.

Those backends load the model with `trust_remote_code`, swap in their own attention through transformers' attention
registry, call `get_image_features` themselves and pass their per-batch state as extra keyword arguments that must
arrive, untouched, at every attention call.
"""

import inspect
import re

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
        recording_model.get_image_features(
            **image_inputs([(1, 2)]), qformer_input_ids=torch.tensor([[1, 400, 500]]), engine_state="image"
        )
    layers = recording_model.config.vision_config.num_hidden_layers
    assert calls_with_marker("image") == ["CLIPAttention"] * layers


def engine_style_logits(model, input_ids: torch.Tensor, images: dict, **image_kwargs) -> torch.Tensor:
    """What vLLM's Transformers backend does: features from `get_image_features` (called as it calls it, one image
    at a time, `return_dict=True`), scattered into the embedded placeholders, then the model on embeddings."""
    features = [
        model.model.get_image_features(
            images["pixel_values"][index : index + 1],
            return_dict=True,
            image_grids=images["image_grids"][index : index + 1],
            **{key: value[index : index + 1] for key, value in image_kwargs.items()},
        ).pooler_output[0]
        for index in range(len(images["pixel_values"]))
    ]
    embeddings = model.get_input_embeddings()(input_ids)
    placeholders = model.model.get_placeholder_mask(input_ids, embeddings).unsqueeze(-1)
    return model(inputs_embeds=embeddings.masked_scatter(placeholders, torch.cat(features))).logits


def test_engine_style_call_with_qformer_inputs_equals_the_pixel_call_with_text_conditioning(tiny_model):
    """The Q-Former's text reaches `get_image_features` as `qformer_input_ids`, so an engine computes the features
    `forward` computes, text conditioning (the default) included."""
    assert tiny_model.config.qformer_text_conditioning
    images = image_inputs([(1, 2), (2, 1)])
    input_ids = torch.tensor([prompt_ids(6, 96) + prompt_ids(4, 96, seed=1)[1:]])
    qformer_ids = input_ids[input_ids != 32000][None].expand(2, -1)
    with torch.no_grad():
        engine_logits = engine_style_logits(tiny_model, input_ids, images, qformer_input_ids=qformer_ids)
        expected = tiny_model(input_ids=input_ids, **images).logits
        other_text = engine_style_logits(tiny_model, input_ids, images, qformer_input_ids=qformer_ids[:, :5])
    torch.testing.assert_close(engine_logits, expected)
    assert not torch.allclose(other_text, expected), "the Q-Former's text did not change the features"


def test_get_image_features_without_qformer_inputs_is_refused_while_text_conditioning_is_on(tiny_model):
    with pytest.raises(ValueError, match="`qformer_input_ids` are required"):
        tiny_model.model.get_image_features(**image_inputs([(1, 2)]))


def test_get_image_features_honours_return_dict_false(tiny_model):
    with torch.no_grad():
        output = tiny_model.model.get_image_features(
            **image_inputs([(1, 2)]), qformer_input_ids=torch.tensor([[1, 5]]), return_dict=False
        )
    assert isinstance(output, tuple)


def test_no_load_rule_drops_the_lm_head(tiny_model):
    """vLLM turns every class's `_keys_to_ignore_on_load_unexpected` into rules that drop matching checkpoint weights
    (its LM head stayed uninitialised: every answer was token 0)."""
    for module in tiny_model.modules():
        patterns = getattr(module, "_keys_to_ignore_on_load_unexpected", None) or []
        assert not [pattern for pattern in patterns if re.search(pattern, "lm_head.weight")], type(module).__name__
