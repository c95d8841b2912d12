"""Converting the original checkpoint: lossless, faithful to the original computation, loadable, and strict.

The fixtures are tiny models in the original's layout: a Mistral folder (vocab 32000), a 24-layer CLIP folder, and an
`mm_projector.bin` saved from a re-statement of the original Q-Former (reference §2) built on
`torch.nn.MultiheadAttention`. The reference computations below are written from the reference document, not from
this repository's model code.
"""

import json
import logging
import shutil
import sys

import pytest
import torch
from conftest import IMAGE_TOKEN_ID
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    MistralConfig,
    MistralForCausalLM,
)
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME

from vision_zephyr_tools.conversion.convert_original_checkpoint import (
    PROJECTOR_PREFIX,
    QFormerSizes,
    build_config,
    check_repo_tokenizer,
    convert_original_checkpoint,
    main,
    original_fusion_groups,
    report_full_model,
    resolve_model_folder,
)


WIDTH, HEADS, QUERIES, BLOCKS = 64, 8, 32, 8
CLIP_WIDTH, CLIP_LAYERS = 32, 24
FUSED_WIDTH = 5 * CLIP_WIDTH
VOCAB = IMAGE_TOKEN_ID  # Zephyr's 32000 tokens; `<image>` becomes row 32000
GRID = (1, 2)  # base view + 2 grid tiles
TILES = 1 + GRID[0] * GRID[1]
TINY_CLIP = {
    "hidden_size": CLIP_WIDTH,
    "intermediate_size": 64,
    "num_hidden_layers": CLIP_LAYERS,
    "num_attention_heads": 4,
    "image_size": 336,
    "patch_size": 28,  # 144 patches per tile instead of CLIP-L's 576 keeps the tests fast; nothing depends on it
    "projection_dim": 16,
}
PROMPT = [1, 523, 28766, 1838, -200, 13, 3195, 349, 456, 28804, 2, 28705]  # -200: the original's image marker


class OriginalQFormerBlock(nn.Module):
    """The original `QFormerBlock`: pre-norm self-attention, cross-attention to the tile, FFN (2x width, exact GELU)."""

    def __init__(self, width: int, vision_width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, kdim=vision_width, vdim=vision_width, batch_first=True)
        self.norm3 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(queries)
        queries = queries + self.self_attn(normed, normed, normed, need_weights=False)[0]
        normed = self.norm2(queries)
        queries = queries + self.cross_attn(normed, features, features, need_weights=False)[0]
        return queries + self.ffn(self.norm3(queries))


class OriginalQFormer(nn.Module):
    """The original `QFormer`; block 0 sees `[queries ; text]` and keeps the query rows, no masks anywhere."""

    def __init__(self, width: int = WIDTH, vision_width: int = FUSED_WIDTH, heads: int = HEADS):
        super().__init__()
        self.learned_queries = nn.Parameter(torch.randn(QUERIES, width))
        self.blocks = nn.ModuleList([OriginalQFormerBlock(width, vision_width, heads) for _ in range(BLOCKS)])
        self.pre_norm = nn.LayerNorm(vision_width)
        self.norm = nn.LayerNorm(width)

    def forward(self, features: torch.Tensor, text_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        features = self.pre_norm(features)
        queries = self.learned_queries.expand(features.shape[0], -1, -1)
        hidden = queries if text_embeddings is None else torch.cat([queries, text_embeddings], dim=1)
        hidden = self.blocks[0](hidden, features)[:, :QUERIES]
        for block in self.blocks[1:]:
            hidden = block(hidden, features)
        return self.norm(hidden)


def randomized(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter random (biases and norms included), so that a misplaced tensor changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            parameter.copy_(offset + 0.1 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def original_projector_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """What the original trainer saved: `named_parameters()` under the model's `mm_projector` prefix."""
    return {PROJECTOR_PREFIX + name: parameter.detach().clone() for name, parameter in module.named_parameters()}


def unpacked_self_attention(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same projector with separate q/k/v weights in the self-attention too."""
    unpacked = {}
    for key, tensor in state_dict.items():
        if key.endswith("self_attn.in_proj_weight"):
            prefix = key.removesuffix("in_proj_weight")
            for name, third in zip("qkv", tensor.chunk(3), strict=True):
                unpacked[f"{prefix}{name}_proj_weight"] = third.clone()
        else:
            unpacked[key] = tensor
    return unpacked


@pytest.fixture(scope="session")
def original_dirs(tmp_path_factory):
    """The original's three inputs: a Mistral folder, a CLIPVisionModel folder, a full CLIPModel folder."""
    root = tmp_path_factory.mktemp("original")
    torch.manual_seed(0)
    llm_config = MistralConfig(
        hidden_size=WIDTH,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=4096,
        sliding_window=4096,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    MistralForCausalLM(llm_config).save_pretrained(root / "llm")
    CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).save_pretrained(root / "clip-vision")
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
    CLIPModel(CLIPConfig(vision_config=TINY_CLIP, text_config=text, projection_dim=16)).save_pretrained(
        root / "clip-full"
    )
    return {"llm": root / "llm", "vision": root / "clip-vision", "full_clip": root / "clip-full"}


@pytest.fixture(scope="session")
def reference_qformer() -> OriginalQFormer:
    torch.manual_seed(1)
    return randomized(OriginalQFormer(), seed=1)


@pytest.fixture(scope="session")
def projector_file(reference_qformer, tmp_path_factory):
    path = tmp_path_factory.mktemp("projector") / "mm_projector.bin"
    torch.save(original_projector_state_dict(reference_qformer), path)
    return path


def convert(original_dirs, projector, output, vision="vision", **options):
    return convert_original_checkpoint(
        projector, output, llm=str(original_dirs["llm"]), vision=str(original_dirs[vision]), **options
    )


@pytest.fixture(scope="session")
def converted_dir(original_dirs, projector_file, tmp_path_factory):
    return convert(original_dirs, projector_file, tmp_path_factory.mktemp("converted"), dtype=torch.float32)


@pytest.fixture(scope="session")
def converted_model(converted_dir):
    return AutoModelForImageTextToText.from_pretrained(converted_dir, trust_remote_code=True).eval()


def saved_tensors(folder) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(path)
    return tensors


def expected_projector_tensors(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The converted Q-Former written out by hand from the original tensors (reference §2 -> our module names)."""
    old = {key.removeprefix(PROJECTOR_PREFIX): tensor for key, tensor in original.items()}
    new = {"query_tokens": old["learned_queries"]}
    for name in ("pre_norm", "norm"):
        new |= {f"{name}.weight": old[f"{name}.weight"], f"{name}.bias": old[f"{name}.bias"]}
    for block in range(BLOCKS):
        source, target = f"blocks.{block}.", f"layers.{block}."
        for old_norm, new_norm in (("norm1", "self_attn_norm"), ("norm2", "cross_attn_norm"), ("norm3", "mlp_norm")):
            for kind in ("weight", "bias"):
                new[f"{target}{new_norm}.{kind}"] = old[f"{source}{old_norm}.{kind}"]
        q, k, v = old[f"{source}self_attn.in_proj_weight"].chunk(3)
        new |= {f"{target}self_attn.q_proj.weight": q, f"{target}self_attn.k_proj.weight": k}
        new[f"{target}self_attn.v_proj.weight"] = v
        for name in "qkv":
            new[f"{target}cross_attn.{name}_proj.weight"] = old[f"{source}cross_attn.{name}_proj_weight"]
        for attention in ("self_attn", "cross_attn"):
            for name, bias in zip("qkv", old[f"{source}{attention}.in_proj_bias"].chunk(3), strict=True):
                new[f"{target}{attention}.{name}_proj.bias"] = bias
            for kind in ("weight", "bias"):
                new[f"{target}{attention}.o_proj.{kind}"] = old[f"{source}{attention}.out_proj.{kind}"]
        for old_layer, new_layer in (("ffn.0", "mlp.fc1"), ("ffn.2", "mlp.fc2")):
            for kind in ("weight", "bias"):
                new[f"{target}{new_layer}.{kind}"] = old[f"{source}{old_layer}.{kind}"]
    return {f"model.multi_modal_projector.{name}": tensor for name, tensor in new.items()}


def test_every_original_tensor_lands_where_it_should(converted_dir, original_dirs, reference_qformer):
    converted = saved_tensors(converted_dir)
    llm = load_file(original_dirs["llm"] / "model.safetensors")
    clip = load_file(original_dirs["vision"] / "model.safetensors")
    expected = expected_projector_tensors(original_projector_state_dict(reference_qformer))
    expected |= {f"model.vision_tower.{key}": tensor for key, tensor in clip.items()}
    expected |= {key.replace("model.", "model.language_model.", 1): tensor for key, tensor in llm.items()}
    grown = ("model.language_model.embed_tokens.weight", "lm_head.weight")

    assert set(converted) == set(expected), f"key sets differ: {set(converted) ^ set(expected)}"
    wrong = [key for key in expected if key not in grown and not torch.equal(converted[key], expected[key])]
    assert not wrong, f"converted tensors differ from the original ones: {wrong[:5]}"
    for key in grown:
        assert converted[key].shape == (VOCAB + 1, WIDTH), f"{key} must have the `<image>` row"
        assert torch.equal(converted[key][:VOCAB], expected[key]), f"{key}: the first {VOCAB} rows changed"
        torch.testing.assert_close(converted[key][VOCAB], expected[key].mean(0), msg=f"{key}: row {VOCAB} != mean")


def test_converted_config_has_the_original_fusion_sizes_and_image_token(converted_model, repo_class):
    config = converted_model.config
    config_module = sys.modules[repo_class("VisionZephyrConfig").__module__]
    assert config.vision_feature_layers == config_module.ORIGINAL_VISION_FEATURE_LAYERS
    assert config.image_grid_pinpoints == config_module.ORIGINAL_GRID_PINPOINTS
    assert (config.image_token_id, config.text_config.vocab_size) == (IMAGE_TOKEN_ID, IMAGE_TOKEN_ID + 1)
    sizes = (config.num_query_tokens, config.qformer_num_layers, config.qformer_intermediate_size)
    assert sizes == (QUERIES, BLOCKS, 2 * WIDTH), "Q-Former sizes must come from the projector tensors"
    assert config.qformer_num_attention_heads == 8, "the original's head count is the default"
    assert config.fused_vision_hidden_size == FUSED_WIDTH


# Zephyr-7B-beta's config.json as published on the Hub (its sizes are the ones in reference §0).
ZEPHYR_CONFIG = {
    "_name_or_path": "mistralai/Mistral-7B-v0.1",
    "architectures": ["MistralForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.35.0",
    "use_cache": True,
    "vocab_size": 32000,
}
CLIP_L_336 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}


def test_config_built_for_the_7b_sources_is_the_repositorys_config_json(tmp_path):
    from vision_zephyr_tools.remote_code import REPO_ROOT

    (tmp_path / "zephyr").mkdir()
    (tmp_path / "zephyr" / "config.json").write_text(json.dumps(ZEPHYR_CONFIG))
    vision = CLIPVisionConfig(**CLIP_L_336, patch_size=14, image_size=336, projection_dim=768)
    sizes = QFormerSizes(
        hidden_size=4096,
        vision_hidden_size=1024,
        num_fusion_groups=5,
        num_queries=32,
        num_blocks=8,
        intermediate_size=8192,
    )
    config = build_config(AutoConfig.from_pretrained(tmp_path / "zephyr"), vision, sizes, 8, 32000, torch.bfloat16)
    config.save_pretrained(tmp_path / "converted")
    built = json.loads((tmp_path / "converted" / "config.json").read_text())
    shipped = json.loads((REPO_ROOT / "config.json").read_text())
    # Only the stamp of the transformers release that wrote the file may differ (the tests run under 5.19 too).
    built["transformers_version"] = shipped["transformers_version"]
    assert built == shipped, "the converter must write the repository's full-model config.json"


def test_fusion_groups_count_from_the_last_hidden_state_as_the_original():
    assert original_fusion_groups(24) == [
        [4, 5, 6, 7, 8],
        [9, 10, 11, 12, 13],
        [14, 15, 16, 17, 18],
        [19, 20, 21, 22, 23],
        [24],
    ]
    assert original_fusion_groups(20)[0] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="last 21 CLIP hidden states"):
        original_fusion_groups(12)


def random_tiles(seed: int = 0) -> torch.Tensor:
    return torch.randn(TILES, 3, 336, 336, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="session")
def original_llm(original_dirs) -> MistralForCausalLM:
    return MistralForCausalLM.from_pretrained(original_dirs["llm"]).eval()


@pytest.fixture(scope="session")
def original_fused_features(original_dirs) -> torch.Tensor:
    """The original tower output for `random_tiles()` (reference §1): 4 means of 5 layers + the last, CLS dropped."""
    clip = CLIPVisionModel.from_pretrained(original_dirs["vision"]).eval()
    with torch.no_grad():
        states = [state[:, 1:] for state in clip(random_tiles(), output_hidden_states=True).hidden_states]
    groups = [torch.stack(states[start : start + 5]).mean(0) for start in (4, 9, 14, 19)]
    return torch.cat([*groups, states[24]], dim=-1)


@pytest.fixture(scope="session")
def original_text_embeddings(original_llm) -> torch.Tensor:
    """Every non-image token of the prompt, embedded by the LLM (reference §2, text conditioning)."""
    with torch.no_grad():
        return original_llm.get_input_embeddings()(torch.tensor([token for token in PROMPT if token != -200]))


@pytest.mark.parametrize("with_text", [True, False], ids=["text-conditioned", "unconditioned"])
def test_qformer_output_equals_the_original_module(
    converted_model, reference_qformer, original_fused_features, original_text_embeddings, with_text
):
    text = original_text_embeddings.expand(TILES, -1, -1) if with_text else None
    context = (
        {"text_context": text, "text_context_mask": torch.ones(text.shape[:2], dtype=torch.bool)} if with_text else {}
    )
    with torch.no_grad():
        expected = reference_qformer(original_fused_features, text)
        converted = converted_model.model.multi_modal_projector(original_fused_features, **context)
    difference = (converted - expected).abs().max().item()
    assert difference <= 1e-5, f"Q-Former output differs from the original module by {difference}"


def test_logits_equal_the_original_forward(
    converted_model, reference_qformer, original_llm, original_fused_features, original_text_embeddings
):
    marker = PROMPT.index(-200)
    embed = original_llm.get_input_embeddings()
    with torch.no_grad():
        image_tokens = reference_qformer(original_fused_features, original_text_embeddings.expand(TILES, -1, -1))
        inputs_embeds = torch.cat(
            [
                embed(torch.tensor(PROMPT[:marker])),
                image_tokens.flatten(0, 1),
                embed(torch.tensor(PROMPT[marker + 1 :])),
            ]
        )
        hidden = original_llm.model(inputs_embeds=inputs_embeds[None]).last_hidden_state
        head = original_llm.lm_head.weight
        expected = hidden @ torch.cat([head, head.mean(0, keepdim=True)]).T  # the vocabulary grown by one row

        input_ids = PROMPT[:marker] + [IMAGE_TOKEN_ID] * (QUERIES * TILES) + PROMPT[marker + 1 :]
        logits = converted_model(
            input_ids=torch.tensor([input_ids]), pixel_values=random_tiles()[None], image_grids=torch.tensor([GRID])
        ).logits
    assert logits.shape == expected.shape == (1, len(input_ids), VOCAB + 1)
    difference = (logits - expected).abs().max().item()
    assert difference <= 1e-4, f"logits differ from the original forward by {difference}"


def test_a_copy_of_the_output_loads_cleanly_and_generates(converted_dir, tmp_path):
    copy = shutil.copytree(converted_dir, tmp_path / "copy")
    model, info = AutoModelForImageTextToText.from_pretrained(copy, trust_remote_code=True, output_loading_info=True)
    problems = {key: value for key, value in info.items() if value}
    assert not problems, f"loading the converted folder reported {problems}"
    input_ids = torch.tensor([[1, 523, *([IMAGE_TOKEN_ID] * QUERIES * TILES), 13, 3195]])
    output = model.generate(
        input_ids=input_ids,
        pixel_values=random_tiles()[None],
        image_grids=torch.tensor([GRID]),
        max_new_tokens=3,
        do_sample=False,
    )
    assert output.shape == (1, input_ids.shape[1] + 3)


def test_a_copy_of_the_output_loads_with_auto_processor(converted_dir, tmp_path):
    from vision_zephyr_tools.conversion.make_tiny_checkpoint import PROCESSOR_FILES

    missing = [name for name in PROCESSOR_FILES if not (converted_dir / name).exists()]
    if missing:
        pytest.skip(f"the repository root has no processor files yet ({missing}), so the conversion writes none")
    copy = shutil.copytree(converted_dir, tmp_path / "copy")
    processor = AutoProcessor.from_pretrained(copy, trust_remote_code=True)
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == IMAGE_TOKEN_ID


def assert_same_tensors(output, reference: dict[str, torch.Tensor], what: str) -> None:
    converted = saved_tensors(output)
    assert converted.keys() == reference.keys(), f"{what}: key sets differ: {converted.keys() ^ reference.keys()}"
    differing = [key for key in reference if not torch.equal(converted[key], reference[key])]
    assert not differing, f"{what}: tensors differ: {differing[:5]}"


def test_unpacked_self_attention_layout_converts_alike(converted_dir, original_dirs, reference_qformer, tmp_path):
    projector = tmp_path / "mm_projector.bin"
    torch.save(unpacked_self_attention(original_projector_state_dict(reference_qformer)), projector)
    output = convert(original_dirs, projector, tmp_path / "out", dtype=torch.float32)
    assert_same_tensors(output, saved_tensors(converted_dir), "unpacked self-attention projector")


def test_sharded_llm_and_bin_clip_with_prefixed_keys_convert_alike(
    converted_dir, original_dirs, projector_file, tmp_path
):
    MistralForCausalLM.from_pretrained(original_dirs["llm"]).save_pretrained(tmp_path / "llm", max_shard_size="1MB")
    assert (tmp_path / "llm" / SAFE_WEIGHTS_INDEX_NAME).exists()
    clip_dir = shutil.copytree(
        original_dirs["vision"], tmp_path / "clip", ignore=shutil.ignore_patterns("*.safetensors")
    )
    clip = load_file(original_dirs["vision"] / "model.safetensors")
    torch.save({f"vision_model.{key}": tensor for key, tensor in clip.items()}, clip_dir / "pytorch_model.bin")
    sources = {"llm": tmp_path / "llm", "vision": clip_dir}
    output = convert(sources, projector_file, tmp_path / "out", dtype=torch.float32)
    assert_same_tensors(output, saved_tensors(converted_dir), "sharded LLM + pytorch_model.bin CLIP")


def test_full_clip_model_folder_gives_its_vision_tower_and_drops_the_text_tower(
    converted_dir, original_dirs, projector_file, tmp_path
):
    output = convert(original_dirs, projector_file, tmp_path / "out", vision="full_clip", dtype=torch.float32)
    full_clip = load_file(original_dirs["full_clip"] / "model.safetensors")
    vision = {
        f"model.vision_tower.{key.removeprefix('vision_model.')}": tensor
        for key, tensor in full_clip.items()
        if key.startswith("vision_model.")
    }
    assert_same_tensors(output, saved_tensors(converted_dir) | vision, "full CLIPModel folder")


def test_safetensors_projector_converts_alike(converted_dir, original_dirs, reference_qformer, tmp_path):
    projector = tmp_path / "mm_projector.safetensors"
    save_file(original_projector_state_dict(reference_qformer), projector)
    output = convert(original_dirs, projector, tmp_path / "out", dtype=torch.float32)
    assert_same_tensors(output, saved_tensors(converted_dir), "safetensors projector")


def test_small_max_shard_size_writes_an_index_that_loads(original_dirs, projector_file, tmp_path):
    output = convert(original_dirs, projector_file, tmp_path / "out", max_shard_size="2MB")
    weight_map = json.loads((output / SAFE_WEIGHTS_INDEX_NAME).read_text())["weight_map"]
    shards = {name: load_file(output / name) for name in set(weight_map.values())}
    assert len(shards) > 1
    for name, tensors in shards.items():
        size = sum(tensor.nbytes for tensor in tensors.values())
        assert size <= 2_000_000 or len(tensors) == 1, f"{name} holds {size} bytes in {len(tensors)} tensors"
        assert all(weight_map[key] == name for key in tensors), f"the index misplaces tensors of {name}"
    _, info = AutoModelForImageTextToText.from_pretrained(output, trust_remote_code=True, output_loading_info=True)
    assert not any(info.values()), f"sharded output reported {info}"


def test_converting_again_into_the_same_folder_replaces_the_earlier_weights(original_dirs, projector_file, tmp_path):
    convert(original_dirs, projector_file, tmp_path / "out", max_shard_size="2MB")
    output = convert(original_dirs, projector_file, tmp_path / "out", dtype=torch.float32)
    assert [path.name for path in output.glob("model*.safetensors*")] == ["model.safetensors"]


def test_default_dtype_writes_bfloat16(converted_dir, original_dirs, projector_file, tmp_path):
    bf16 = saved_tensors(convert(original_dirs, projector_file, tmp_path / "out"))
    fp32 = saved_tensors(converted_dir)
    assert all(tensor.dtype == torch.bfloat16 for tensor in bf16.values())
    assert all(torch.equal(bf16[key], fp32[key].to(torch.bfloat16)) for key in fp32)


class PickledObject:
    """Anything but tensors: loading it would need to unpickle code."""


def write_projector(state_dict, tmp_path):
    path = tmp_path / "mm_projector.bin"
    torch.save(state_dict, path)
    return path


def test_projector_problems_are_all_reported_in_one_error(original_dirs, reference_qformer, tmp_path):
    state_dict = original_projector_state_dict(reference_qformer)
    del state_dict[f"{PROJECTOR_PREFIX}blocks.3.norm2.bias"]
    state_dict[f"{PROJECTOR_PREFIX}blocks.0.gate"] = torch.zeros(WIDTH)
    state_dict[f"{PROJECTOR_PREFIX}blocks.5.ffn.2.weight"] = torch.zeros(WIDTH, 2 * WIDTH + 1)
    with pytest.raises(ValueError) as error:
        convert(original_dirs, write_projector(state_dict, tmp_path), tmp_path / "out")
    message = str(error.value)
    assert "missing key model.mm_projector.blocks.3.norm2.bias, expected shape [64]" in message
    assert "unexpected key model.mm_projector.blocks.0.gate" in message
    assert "model.mm_projector.blocks.5.ffn.2.weight: shape [64, 129], expected [64, 128]" in message
    assert not (tmp_path / "out").exists(), "nothing may be written before the inputs are validated"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda sd: sd.pop(f"{PROJECTOR_PREFIX}learned_queries"), r"missing key model\.mm_projector\.learned_queries"),
        (
            lambda sd: sd.update({f"{PROJECTOR_PREFIX}extra.weight": torch.zeros(1)}),
            r"unexpected key model\.mm_projector\.extra\.weight",
        ),
        (
            lambda sd: sd.update({f"{PROJECTOR_PREFIX}pre_norm.bias": torch.zeros(7)}),
            r"model\.mm_projector\.pre_norm\.bias: shape \[7\], expected \[160\]",
        ),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_a_wrong_projector_key_raises_a_clear_error(original_dirs, reference_qformer, tmp_path, change, message):
    state_dict = original_projector_state_dict(reference_qformer)
    change(state_dict)
    with pytest.raises(ValueError, match=message):
        convert(original_dirs, write_projector(state_dict, tmp_path), tmp_path / "out")


@pytest.mark.parametrize(
    "content, message",
    [
        ([torch.zeros(2)], "holds a list, expected a dict of tensors"),
        ({"a": 1}, r"not tensors: \{'a': 'int'\}"),
        ({"model.mm_projector.norm.weight": PickledObject()}, r"cannot be read .* torch\.load\(weights_only=True"),
    ],
    ids=["list", "dict-of-int", "pickled-object"],
)
def test_a_projector_that_is_not_a_dict_of_tensors_raises(original_dirs, tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        convert(original_dirs, write_projector(content, tmp_path), tmp_path / "out")


@pytest.mark.parametrize(
    "width, vision_width, message",
    [
        (48, FUSED_WIDTH, r"model\.mm_projector\.learned_queries: shape \[32, 48\], expected \[32, 64\]"),
        (
            WIDTH,
            128,
            r"model\.mm_projector\.blocks\.0\.cross_attn\.k_proj_weight: shape \[64, 128\], expected \[64, 160\]",
        ),
    ],
    ids=["projector-width-vs-llm", "key-width-vs-5x-clip"],
)
def test_projector_widths_must_match_the_llm_and_clip(original_dirs, tmp_path, width, vision_width, message):
    projector = OriginalQFormer(width=width, vision_width=vision_width)
    with pytest.raises(ValueError, match=message):
        convert(original_dirs, write_projector(original_projector_state_dict(projector), tmp_path), tmp_path / "out")


def test_llm_and_clip_tensors_that_do_not_fit_are_all_reported(original_dirs, projector_file, tmp_path):
    llm_dir = shutil.copytree(original_dirs["llm"], tmp_path / "llm")
    llm = load_file(llm_dir / "model.safetensors")
    del llm["model.norm.weight"]
    save_file({**llm, "model.extra_adapter.weight": torch.zeros(2)}, llm_dir / "model.safetensors")
    clip_dir = shutil.copytree(original_dirs["vision"], tmp_path / "clip")
    clip = load_file(clip_dir / "model.safetensors")
    save_file({**clip, "vision_model.gate.weight": torch.zeros(2)}, clip_dir / "model.safetensors")
    with pytest.raises(ValueError) as error:
        convert({"llm": llm_dir, "vision": clip_dir}, projector_file, tmp_path / "out")
    message = str(error.value)
    assert "missing model.language_model.norm.weight [64]" in message
    assert "LLM tensor model.extra_adapter.weight has no place in the model" in message
    assert "CLIP tensor vision_model.gate.weight has no place in the model" in message


def test_missing_inputs_raise_file_not_found(original_dirs, projector_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert(original_dirs, tmp_path / "nowhere.bin", tmp_path / "out")
    empty_llm = shutil.copytree(original_dirs["llm"], tmp_path / "llm", ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(FileNotFoundError, match="No weights in"):
        convert({**original_dirs, "llm": empty_llm}, projector_file, tmp_path / "out")


@pytest.mark.parametrize("renamed", [False, True], ids=["same-vocabulary", "two-ids-swapped"])
def test_the_llm_folders_own_tokenizer_is_compared_with_the_repositorys(tmp_path, caplog, renamed):
    from vision_zephyr_tools.remote_code import REPO_ROOT

    AutoTokenizer.from_pretrained(REPO_ROOT, trust_remote_code=True).save_pretrained(tmp_path)
    if renamed:
        tokenizer_file = tmp_path / "tokenizer.json"
        tokenizer = json.loads(tokenizer_file.read_text())
        vocab = tokenizer["model"]["vocab"]
        vocab["▁of"], vocab["el"] = vocab["el"], vocab["▁of"]
        tokenizer_file.write_text(json.dumps(tokenizer))
    with caplog.at_level(logging.INFO, logger="convert_original_checkpoint"):
        check_repo_tokenizer(tmp_path, IMAGE_TOKEN_ID)
    expected = "differs from the repository's in 4 token/id pairs" if renamed else "has the repository's vocabulary"
    assert expected in caplog.text


def test_hub_ids_resolve_from_the_local_cache_offline(original_dirs, tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = "0" * 40
    cached_repo = tmp_path / "models--someorg--tiny-zephyr"
    (cached_repo / "refs").mkdir(parents=True)
    (cached_repo / "refs" / "main").write_text(commit)
    shutil.copytree(original_dirs["llm"], cached_repo / "snapshots" / commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_model_folder("someorg/tiny-zephyr") == cached_repo / "snapshots" / commit
    with pytest.raises(FileNotFoundError, match="'someorg/missing' is neither a local folder nor"):
        resolve_model_folder("someorg/missing")


def test_command_line_reports_errors_without_a_traceback(original_dirs, tmp_path, monkeypatch, capsys):
    arguments = ["--llm", str(original_dirs["llm"]), "--vision", str(original_dirs["vision"])]
    arguments += ["--projector", str(write_projector([1], tmp_path)), "--output", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", ["convert_original_checkpoint.py", *arguments])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert "error:" in capsys.readouterr().err


def test_full_model_report_matches_the_reference_sizes():
    report = report_full_model(torch.bfloat16, "5GB")
    assert "multi_modal_projector: 1,678,428,160" in report, "reference §2: the Q-Former has 1,678,428,160 params"
    assert "model-00001-of-00004.safetensors" in report
