"""The model as users load and run it: Auto classes, generation, training, attention kernels, dtypes."""

import copy
import sys

import pytest
import torch
from conftest import IMAGE_TOKEN_ID, image_inputs, left_pad, prompt_ids
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText


QUERIES = 32


def visual_tokens(grid: tuple[int, int]) -> int:
    rows, cols = grid
    return QUERIES * (1 + rows * cols)


def single_image_batch(grid=(1, 2), text_length=12, seed=0) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.tensor([prompt_ids(text_length, visual_tokens(grid), seed)]),
        **image_inputs([grid], seed),
    }


@pytest.mark.parametrize(
    "auto_class, expected_class",
    [
        (AutoModelForImageTextToText, "VisionZephyrForConditionalGeneration"),
        (AutoModelForCausalLM, "VisionZephyrForConditionalGeneration"),
        (AutoModel, "VisionZephyrModel"),
    ],
)
def test_every_auto_class_loads_the_folder_cleanly(tiny_checkpoint, auto_class, expected_class):
    model, info = auto_class.from_pretrained(tiny_checkpoint, trust_remote_code=True, output_loading_info=True)
    assert type(model).__name__ == expected_class
    problems = {key: value for key, value in info.items() if value}
    assert not problems, f"loading {auto_class.__name__} reported {problems}"


def test_auto_config_loads_the_folder(tiny_checkpoint):
    config = AutoConfig.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    assert type(config).__name__ == "VisionZephyrConfig"
    assert config.vision_feature_layers == [
        [4, 5, 6, 7, 8],
        [9, 10, 11, 12, 13],
        [14, 15, 16, 17, 18],
        [19, 20, 21, 22, 23],
        [24],
    ]


def test_loaded_weights_equal_the_saved_file(tiny_checkpoint, tiny_model):
    saved = load_file(tiny_checkpoint / "model.safetensors")
    loaded = tiny_model.state_dict()
    differing = [key for key, tensor in saved.items() if not torch.equal(tensor, loaded[key])]
    assert not differing, f"from_pretrained re-initialised {differing[:5]}"


def test_two_loads_give_identical_logits(tiny_checkpoint, tiny_model):
    other = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, trust_remote_code=True).eval()
    batch = single_image_batch()
    with torch.no_grad():
        assert torch.equal(tiny_model(**batch).logits, other(**batch).logits)


def test_save_and_reload_round_trip_is_identical(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path, trust_remote_code=True).eval()
    batch = single_image_batch(grid=(3, 1))
    with torch.no_grad():
        assert torch.equal(tiny_model(**batch).logits, reloaded(**batch).logits)


def test_image_sizes_give_the_same_result_as_image_grids(tiny_model):
    batch = single_image_batch(grid=(1, 2))
    by_sizes = {**batch, "image_sizes": torch.tensor([[480, 640]])}
    del by_sizes["image_grids"]
    with torch.no_grad():
        assert torch.equal(tiny_model(**batch).logits, tiny_model(**by_sizes).logits)


def test_left_padded_batch_generates_the_same_tokens_as_one_by_one(tiny_model):
    grids = [(1, 2), (3, 1), (2, 1)]
    prompts = [
        prompt_ids(text_length, visual_tokens(grid), seed)
        for seed, (grid, text_length) in enumerate(zip(grids, [5, 17, 9], strict=True))
    ]
    images = [image_inputs([grid], seed) for seed, grid in enumerate(grids)]
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 2}
    one_by_one = [
        tiny_model.generate(input_ids=torch.tensor([ids]), **image, **settings)[0, len(ids) :].tolist()
        for ids, image in zip(prompts, images, strict=True)
    ]
    batch_images = image_inputs(grids)
    for index, image in enumerate(images):  # same tiles as the single runs, padded to the batch's tile count
        tiles = image["pixel_values"].shape[1]
        batch_images["pixel_values"][index] = 0
        batch_images["pixel_values"][index, :tiles] = image["pixel_values"][0]
    batched = tiny_model.generate(**left_pad(prompts), **batch_images, **settings)
    new_tokens = batched[:, -settings["max_new_tokens"] :].tolist()
    assert new_tokens == one_by_one, "a left-padded batch must generate what each sample generates alone"


def test_text_only_prompt_generates(tiny_model):
    input_ids = torch.tensor([prompt_ids(10, 0)])
    output = tiny_model.generate(input_ids=input_ids, max_new_tokens=4, do_sample=False, pad_token_id=2)
    assert output.shape == (1, input_ids.shape[1] + 4)


def test_eager_and_sdpa_logits_agree(tiny_checkpoint):
    batch = {
        **left_pad([prompt_ids(8, visual_tokens((1, 2))), prompt_ids(3, visual_tokens((1, 3)), 1)]),
        **image_inputs([(1, 2), (1, 3)]),
    }
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = AutoModelForImageTextToText.from_pretrained(
            tiny_checkpoint, trust_remote_code=True, attn_implementation=implementation
        ).eval()
        with torch.no_grad():
            logits[implementation] = model(**batch).logits
    mask = batch["attention_mask"].bool()
    difference = (logits["eager"] - logits["sdpa"])[mask].abs().max().item()
    assert difference <= 1e-4, f"eager and sdpa differ by {difference}"


def test_set_attn_implementation_switches_the_projector_too(tiny_checkpoint, repo_class):
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    projector_attention = model.model.multi_modal_projector.layers[0].self_attn
    model.set_attn_implementation("eager")
    assert projector_attention.config._attn_implementation == "eager"
    assert model.model.vision_tower.config._attn_implementation == "eager"
    assert model.model.language_model.config._attn_implementation == "eager"
    model.set_attn_implementation("sdpa")
    assert projector_attention.config._attn_implementation == "sdpa"


def test_projector_falls_back_to_sdpa_where_its_kernel_cannot_serve(tiny_model):
    projector_attention_implementation = sys.modules[type(tiny_model).__module__].projector_attention_implementation
    config = tiny_model.config
    original = config._attn_implementation
    try:
        config._attn_implementation = "flash_attention_2"
        assert projector_attention_implementation(config) == "sdpa"
        config._attn_implementation = "eager"
        assert projector_attention_implementation(config) == "eager"
    finally:
        config._attn_implementation = original


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_cross_attention_in_feature_space_equals_projecting_every_patch(tiny_model, implementation):
    modeling = sys.modules[type(tiny_model).__module__]
    config = copy.deepcopy(tiny_model.config)
    config._attn_implementation = implementation
    cross_attention = modeling.VisionZephyrQFormerCrossAttention(config, config.fused_vision_hidden_size)
    generator = torch.Generator().manual_seed(0)
    for parameter in cross_attention.parameters():  # weights and biases well away from zero, scores far from uniform
        torch.nn.init.normal_(parameter, std=0.3, generator=generator)
    queries = torch.randn(3, QUERIES, config.text_config.hidden_size, generator=generator)
    patches = torch.randn(3, 576, config.fused_vision_hidden_size, generator=generator)
    with torch.no_grad():
        reassociated = cross_attention(queries, patches)
        textbook = modeling.VisionZephyrQFormerAttention.forward(cross_attention, queries, patches)
    torch.testing.assert_close(reassociated, textbook, rtol=1e-5, atol=2e-4)


def test_bfloat16_forward_and_generate_run(tiny_checkpoint):
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, trust_remote_code=True, dtype=torch.bfloat16)
    batch = single_image_batch()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    output = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=2)
    assert output.shape[1] == batch["input_ids"].shape[1] + 3


def labelled_batch(answer: list[int]) -> dict[str, torch.Tensor]:
    prompt = prompt_ids(6, visual_tokens((1, 2)))
    input_ids = torch.tensor([prompt + answer])
    labels = torch.tensor([[-100] * len(prompt) + answer])
    return {"input_ids": input_ids, "labels": labels, **image_inputs([(1, 2)])}


def test_labels_give_a_finite_loss_and_gradients(checkpoint_copy):
    model = AutoModelForImageTextToText.from_pretrained(checkpoint_copy, trust_remote_code=True).train()
    loss = model(**labelled_batch([400, 500, 2])).loss
    assert torch.isfinite(loss)
    loss.backward()
    projector = model.model.multi_modal_projector
    assert projector.query_tokens.grad is not None and projector.query_tokens.grad.abs().sum() > 0
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients(tiny_checkpoint):
    gradients = []
    for checkpointing in (False, True):
        model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, trust_remote_code=True).train()
        if checkpointing:
            # `activation_checkpointing_enable` is 5.23's name; 5.19 (the floor, also tested) only has the old one.
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        model(**labelled_batch([400, 500, 2])).loss.backward()
        gradients.append(model.model.multi_modal_projector.query_tokens.grad)
    torch.testing.assert_close(gradients[0], gradients[1])


def test_labelled_answer_tokens_are_hidden_from_the_projector(tiny_model):
    features = []
    for answer in ([400, 500, 2], [900, 33, 2]):
        with torch.no_grad():
            features.append(tiny_model(**labelled_batch(answer)).image_hidden_states)
    assert torch.equal(features[0], features[1]), "the projector must not see the training target"


def test_projector_is_conditioned_on_the_prompt_text(tiny_model):
    with torch.no_grad():
        first = tiny_model(**single_image_batch(seed=0, text_length=12)).image_hidden_states
        batch = single_image_batch(seed=0, text_length=12)
        batch["input_ids"][0, -1] = 777
        second = tiny_model(**batch).image_hidden_states
    assert not torch.allclose(first, second), "block 0 must attend to the prompt's text tokens"


def test_text_conditioning_can_be_switched_off(checkpoint_copy):
    model = AutoModelForImageTextToText.from_pretrained(
        checkpoint_copy, trust_remote_code=True, qformer_text_conditioning=False
    ).eval()
    batch = single_image_batch()
    with torch.no_grad():
        first = model(**batch).image_hidden_states
        batch["input_ids"][0, -1] = 777
        assert torch.equal(first, model(**batch).image_hidden_states)


def test_logits_to_keep_returns_only_the_last_positions(tiny_model):
    batch = single_image_batch()
    with torch.no_grad():
        full = tiny_model(**batch).logits
        last = tiny_model(**batch, logits_to_keep=1).logits
    assert last.shape[1] == 1
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_mlp_projector_variant_runs_through_its_processor(tiny_mlp_checkpoint):
    from PIL import Image
    from transformers import AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_mlp_checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_mlp_checkpoint, trust_remote_code=True)
    inputs = processor(text="<image>\nWhat is this?", images=Image.new("RGB", (640, 480)), return_tensors="pt")
    patches_per_tile = (336 // 14) ** 2
    assert (inputs["input_ids"] == IMAGE_TOKEN_ID).sum() == patches_per_tile * 3
    output = model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=2)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 2


def test_placeholder_count_mismatch_raises_a_clear_error(tiny_model):
    batch = single_image_batch()
    batch["input_ids"] = batch["input_ids"][:, :-40]
    batch["input_ids"][0, -1] = 5
    with pytest.raises(ValueError, match="`<image>` placeholder tokens"):
        tiny_model(**batch)


def test_pixel_values_without_grid_information_raise(tiny_model):
    batch = single_image_batch()
    del batch["image_grids"]
    with pytest.raises(ValueError, match="image_grids"):
        tiny_model(**batch)


def test_wrongly_shaped_pixel_values_raise(tiny_model):
    batch = single_image_batch()
    batch["pixel_values"] = batch["pixel_values"][0]
    with pytest.raises(ValueError, match="pixel_values"):
        tiny_model(**batch)


def test_device_map_auto_loads_and_runs(tiny_checkpoint):
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, trust_remote_code=True, device_map="auto")
    assert "VisionZephyrQFormerLayer" in model._no_split_modules
    with torch.no_grad():
        assert torch.isfinite(model(**single_image_batch()).logits).all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"vision_feature_layers": [[4, 5], []]}, "vision_feature_layers"),
        ({"vision_feature_layers": [[30]]}, "outside the vision tower"),
        ({"qformer_num_attention_heads": 5}, "divisible"),
        ({"image_grid_pinpoints": [[336, 500]]}, "image_grid_pinpoints"),
        ({"tile_size": 224}, "tile_size"),
    ],
)
def test_invalid_config_values_raise(repo_class, overrides, message):
    from vision_zephyr_tools.conversion.make_tiny_checkpoint import tiny_config

    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_full_config_defaults_are_the_original_7b_model(repo_class):
    config = repo_class("VisionZephyrConfig")()
    assert config.fused_vision_hidden_size == 5120
    assert (config.num_query_tokens, config.qformer_num_layers, config.qformer_num_attention_heads) == (32, 8, 8)
    assert config.qformer_intermediate_size == 8192
    assert config.text_config.vocab_size == 32001 and config.image_token_id == 32000
    assert config.tie_word_embeddings is False


def test_qformer_inputs_are_refused_next_to_labels(tiny_model):
    """The processor's Q-Former text holds the whole chat, answers included; with labels the model derives it."""
    batch = single_image_batch()
    with pytest.raises(ValueError, match="cannot be combined with `labels`"):
        tiny_model(**batch, labels=batch["input_ids"], qformer_input_ids=torch.tensor([[1, 2]]))
