"""Convert the original Vision-Zephyr (Zephyr-7B-beta + CLIP ViT-L/14-336 + `mm_projector.bin`) into this project.

The output folder is a complete Hub repository: sharded safetensors, config (with `auto_map`), generation config,
the remote-code files and, when the repository root has them, the processor files (tokenizer with `<image>`,
image processor config, chat template). Tensors are streamed one by one into shards, so the peak memory stays near
one shard plus one source file, far below the size of the model.

    vision-zephyr convert --projector mm_projector.bin --output vision-zephyr-7b
    vision-zephyr convert --llm ./zephyr-7b-beta --vision ./clip-vit-large-patch14-336 \\
        --projector ./mm_projector.bin --output ./vision-zephyr-7b --dtype bfloat16 --max-shard-size 5GB
    vision-zephyr convert --report    # 7B parameter count and shard layout, reads no weights

Local folders work offline; Hub ids are downloaded (weights and configs only) when no such local path exists.
"""

import argparse
import functools
import json
import logging
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.serialization import StateDictSplit, split_state_dict_into_shards_factory
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PreTrainedConfig
from transformers.utils.hub import convert_file_size_to_int

from vision_zephyr_tools.conversion.make_tiny_checkpoint import PROCESSOR_FILES, copy_code_and_processor_files
from vision_zephyr_tools.remote_code import AUTO_MAP, REPO_ROOT, load_repo_class


logger = logging.getLogger("convert_original_checkpoint")

DEFAULT_LLM = "HuggingFaceH4/zephyr-7b-beta"
DEFAULT_VISION = "openai/clip-vit-large-patch14-336"
PROJECTOR_PREFIX = "model.mm_projector."
# `nn.MultiheadAttention` keeps all heads in the same matrices, so the head count is not in the file; the original
# hard-codes `nhead=8` (reference §2).
ORIGINAL_QFORMER_HEADS = 8
# The original fuses the last 21 CLIP hidden states: 4 consecutive runs of 5 averaged, then the last state alone.
ORIGINAL_AVERAGED_GROUPS, ORIGINAL_GROUP_LENGTH = 4, 5
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
WEIGHT_LAYOUTS = [
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
]
CHECKPOINT_ONLY_FIELDS = ("architectures", "dtype", "_name_or_path", "transformers_version")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer.model", "tokenizer_config.json"]

# (source key pattern, target keys). Several targets split the source in equal row blocks, in that order
# (packed attention: q, k, v). Projector patterns apply to the key without `PROJECTOR_PREFIX`.
KeyRules = list[tuple[str, list[str]]]
PROJECTOR_RULES: KeyRules = [
    (r"learned_queries", ["query_tokens"]),
    (r"(pre_norm|norm)\.(weight|bias)", [r"\1.\2"]),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", [r"layers.\1.self_attn_norm.\2"]),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", [r"layers.\1.cross_attn_norm.\2"]),
    (r"blocks\.(\d+)\.norm3\.(weight|bias)", [r"layers.\1.mlp_norm.\2"]),
    (
        r"blocks\.(\d+)\.(self_attn|cross_attn)\.in_proj_(weight|bias)",
        [r"layers.\1.\2.q_proj.\3", r"layers.\1.\2.k_proj.\3", r"layers.\1.\2.v_proj.\3"],
    ),
    (r"blocks\.(\d+)\.(self_attn|cross_attn)\.([qkv])_proj_weight", [r"layers.\1.\2.\3_proj.weight"]),
    (r"blocks\.(\d+)\.(self_attn|cross_attn)\.out_proj\.(weight|bias)", [r"layers.\1.\2.o_proj.\3"]),
    (r"blocks\.(\d+)\.ffn\.0\.(weight|bias)", [r"layers.\1.mlp.fc1.\2"]),
    (r"blocks\.(\d+)\.ffn\.2\.(weight|bias)", [r"layers.\1.mlp.fc2.\2"]),
]
LLM_RULES: KeyRules = [(r"model\.(.+)", [r"model.language_model.\1"]), (r"lm_head\.weight", ["lm_head.weight"])]
# Older transformers saved RoPE frequencies as buffers; they are recomputed from the config.
LLM_DROPPED = [r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"]
# A `CLIPVisionModel` saved by transformers 5 has flat keys, older ones and full `CLIPModel`s use `vision_model.`.
VISION_RULES: KeyRules = [
    (r"(?:vision_model\.)?((?:embeddings|encoder|pre_layrnorm|post_layernorm)\..+)", [r"model.vision_tower.\1"])
]
VISION_DROPPED = [
    r"(?:vision_model\.)?embeddings\.position_ids",
    r"text_model\..+",
    r"(?:text|visual)_projection\..+",
    r"logit_scale",
]


class CheckpointTensors:
    """The tensors of one checkpoint (one `.safetensors`/`.bin` file or several shards), read lazily."""

    def __init__(self, name: str, files: list[Path]):
        self.name = name  # for error messages: "LLM", "CLIP", "projector"
        self.file_of: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for path in files:
            for key, shape in tensor_shapes_in_file(path).items():
                self.file_of[key] = path
                self.shapes[key] = shape

    def read(self, key: str, rows: slice) -> torch.Tensor:
        """`rows` of the tensor `key` (from safetensors, without reading the other rows)."""
        return open_tensor_reader(self.file_of[key])(key)[rows]


def load_tensor_dict(path: Path) -> dict[str, torch.Tensor]:
    """A `torch.save`d state dict, memory-mapped and without unpickling code (`weights_only=True`)."""
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise ValueError(
            f"{path} cannot be read as a state dict with torch.load(weights_only=True, mmap=True): {error}"
        ) from error
    if not isinstance(tensors, dict):
        raise ValueError(f"{path} holds a {type(tensors).__name__}, expected a dict of tensors (a state dict).")
    not_tensors = {key: type(value).__name__ for key, value in tensors.items() if not isinstance(value, torch.Tensor)}
    if not_tensors:
        raise ValueError(f"{path} must map names to tensors; these entries are not tensors: {not_tensors}")
    return tensors


def tensor_shapes_in_file(path: Path) -> dict[str, tuple[int, ...]]:
    if path.suffix == ".safetensors":
        with safe_open(path, framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    return {key: tuple(tensor.shape) for key, tensor in load_tensor_dict(path).items()}


# One file open at a time across all sources: opening the next one unmaps the previous one, whose touched pages would
# otherwise stay in the resident memory until the end of the conversion.
@functools.lru_cache(maxsize=1)
def open_tensor_reader(path: Path) -> Callable[[str], object]:
    """`key -> sliceable tensor` for one file, memory-mapped."""
    if path.suffix == ".safetensors":
        return safe_open(path, framework="pt").get_slice
    return load_tensor_dict(path).__getitem__


def checkpoint_files(folder: Path) -> list[Path]:
    """The weight files of a model folder: safetensors (sharded or single) first, else PyTorch `.bin`."""
    for index_name, single_name in WEIGHT_LAYOUTS:
        if (folder / index_name).is_file():
            weight_map = json.loads((folder / index_name).read_text())["weight_map"]
            return [folder / name for name in dict.fromkeys(weight_map.values())]
        if (folder / single_name).is_file():
            return [folder / single_name]
    expected = ", ".join(name for layout in WEIGHT_LAYOUTS for name in layout)
    raise FileNotFoundError(f"No weights in {folder}: expected one of {expected}.")


def resolve_model_folder(name_or_path: str) -> Path:
    """A local folder as is; otherwise a Hub repository: configs and safetensors (else `.bin`), from the cache when
    already downloaded (also with `HF_HUB_OFFLINE=1`)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is a file; pass the model folder that holds config.json and weights.")
        return path
    try:
        folder = Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.model", "*.safetensors"]))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.model", "*.bin"]))
        return folder
    except Exception as error:
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a local folder nor a downloadable Hub repository ({error})."
        ) from error


def load_projector(path: Path) -> CheckpointTensors:
    """The original `mm_projector.bin` (or a `.safetensors` with the same keys)."""
    if not path.is_file():
        raise FileNotFoundError(f"Projector file {path} does not exist.")
    return CheckpointTensors("projector", [path])


def vision_config_from(config: PreTrainedConfig) -> PreTrainedConfig:
    """The CLIP vision config, also when the folder holds a full `CLIPModel` (text tower included)."""
    if config.model_type == "clip":
        return config.vision_config
    if config.model_type != "clip_vision_model":
        raise ValueError(f"--vision must be a CLIP model folder, got a config of type {config.model_type!r}.")
    return config


def original_fusion_groups(num_hidden_layers: int) -> list[list[int]]:
    """The original's layer fusion as `hidden_states` indices; for the 24-layer CLIP-L: 4-8, 9-13, 14-18, 19-23, 24.

    The original selects the last `4 * 5 + 1` hidden states, so the groups are counted from the end.
    """
    num_states = num_hidden_layers + 1
    first = num_states - (ORIGINAL_AVERAGED_GROUPS * ORIGINAL_GROUP_LENGTH + 1)
    if first < 0:
        raise ValueError(
            f"The original fuses the last {num_states - first} CLIP hidden states, but the vision tower has only "
            f"{num_states} ({num_hidden_layers} layers)."
        )
    averaged = [
        list(range(first + group * ORIGINAL_GROUP_LENGTH, first + (group + 1) * ORIGINAL_GROUP_LENGTH))
        for group in range(ORIGINAL_AVERAGED_GROUPS)
    ]
    return [*averaged, [num_states - 1]]


@dataclass(frozen=True)
class QFormerSizes:
    """Sizes the projector must have: widths from the LLM and CLIP configs, the rest read from its tensors."""

    hidden_size: int
    vision_hidden_size: int
    num_fusion_groups: int
    num_queries: int | None
    num_blocks: int
    intermediate_size: int | None

    @property
    def fused_vision_width(self) -> int:
        return self.num_fusion_groups * self.vision_hidden_size

    def describe(self) -> str:
        return (
            f"LLM hidden size {self.hidden_size}, fused vision width {self.fused_vision_width} = "
            f"{self.num_fusion_groups} fused layer groups x CLIP hidden size {self.vision_hidden_size} (from the "
            f"configs); {self.num_queries} queries, {self.num_blocks} blocks, FFN width {self.intermediate_size} "
            "(from the file)"
        )


def qformer_sizes(
    shapes: dict[str, tuple[int, ...]], hidden_size: int, vision_hidden_size: int, num_fusion_groups: int
) -> QFormerSizes:
    """Reads query count, block count and FFN width from the projector tensors (None when they are missing)."""
    names = {key.removeprefix(PROJECTOR_PREFIX): shape for key, shape in shapes.items()}
    queries = names.get("learned_queries")
    block_indices = [int(match[1]) for name in names if (match := re.match(r"blocks\.(\d+)\.", name))]
    ffn_rows = [shape[0] for name, shape in names.items() if re.fullmatch(r"blocks\.\d+\.ffn\.0\.weight", name)]
    return QFormerSizes(
        hidden_size=hidden_size,
        vision_hidden_size=vision_hidden_size,
        num_fusion_groups=num_fusion_groups,
        num_queries=queries[0] if queries and len(queries) == 2 else None,
        num_blocks=max(block_indices) + 1 if block_indices else 0,
        intermediate_size=ffn_rows[0] if ffn_rows else None,
    )


def attention_shapes(prefix: str, key_width: int, hidden_size: int, packed: bool) -> dict[str, tuple]:
    """`nn.MultiheadAttention` tensors: q/k/v packed in `in_proj_weight` only when keys are as wide as queries."""
    shapes = {f"{prefix}.in_proj_bias": (3 * hidden_size,)}
    if packed:
        shapes[f"{prefix}.in_proj_weight"] = (3 * hidden_size, hidden_size)
    else:
        shapes[f"{prefix}.q_proj_weight"] = (hidden_size, hidden_size)
        shapes[f"{prefix}.k_proj_weight"] = (hidden_size, key_width)
        shapes[f"{prefix}.v_proj_weight"] = (hidden_size, key_width)
    shapes[f"{prefix}.out_proj.weight"] = (hidden_size, hidden_size)
    shapes[f"{prefix}.out_proj.bias"] = (hidden_size,)
    return shapes


def expected_projector_shapes(sizes: QFormerSizes, present: set[str]) -> dict[str, tuple]:
    """The original Q-Former's `named_parameters()` (reference §2); `None` marks a size the file did not give."""
    width, vision_width, ffn = sizes.hidden_size, sizes.fused_vision_width, sizes.intermediate_size
    shapes = {"learned_queries": (sizes.num_queries, width)}
    for block in range(sizes.num_blocks):
        prefix = f"blocks.{block}"
        for norm in ("norm1", "norm2", "norm3"):
            shapes |= {f"{prefix}.{norm}.weight": (width,), f"{prefix}.{norm}.bias": (width,)}
        for attention, key_width in (("self_attn", width), ("cross_attn", vision_width)):
            name = f"{prefix}.{attention}"
            packed = key_width == width and PROJECTOR_PREFIX + f"{name}.q_proj_weight" not in present
            shapes |= attention_shapes(name, key_width, width, packed)
        shapes |= {
            f"{prefix}.ffn.0.weight": (ffn, width),
            f"{prefix}.ffn.0.bias": (ffn,),
            f"{prefix}.ffn.2.weight": (width, ffn),
            f"{prefix}.ffn.2.bias": (width,),
        }
    shapes |= {"pre_norm.weight": (vision_width,), "pre_norm.bias": (vision_width,)}
    shapes |= {"norm.weight": (width,), "norm.bias": (width,)}
    return {PROJECTOR_PREFIX + name: shape for name, shape in shapes.items()}


def format_shape(shape: tuple) -> str:
    return "[" + ", ".join("?" if size is None else str(size) for size in shape) + "]"


def shape_matches(found: tuple[int, ...], expected: tuple) -> bool:
    return len(found) == len(expected) and all(e is None or f == e for f, e in zip(found, expected, strict=True))


def validate_projector(projector: CheckpointTensors, sizes: QFormerSizes, path: Path) -> None:
    """Raises one `ValueError` listing every missing key, unexpected key and wrong shape of the projector file."""
    expected = expected_projector_shapes(sizes, set(projector.shapes))
    problems = [
        f"missing key {key}, expected shape {format_shape(shape)}"
        for key, shape in expected.items()
        if key not in projector.shapes
    ]
    problems += [f"unexpected key {key}" for key in projector.shapes if key not in expected]
    problems += [
        f"{key}: shape {format_shape(shape)}, expected {format_shape(expected[key])}"
        for key, shape in projector.shapes.items()
        if key in expected and not shape_matches(shape, expected[key])
    ]
    if sizes.num_blocks == 0:
        problems.append(f"no Q-Former blocks ({PROJECTOR_PREFIX}blocks.N.*) in the file")
    if problems:
        raise ValueError(
            f"{path} does not have the original Q-Former layout ({sizes.describe()}); {len(problems)} problem(s):\n  "
            + "\n  ".join(problems)
        )


@dataclass(frozen=True)
class TensorRecipe:
    """How one tensor of the converted model is made from one source tensor."""

    source: CheckpointTensors
    key: str
    rows: slice = field(default_factory=lambda: slice(None))
    # The `<image>` row of the grown vocabulary (embeddings and LM head): the mean of the existing rows.
    append_mean_row: bool = False

    def shape(self) -> tuple[int, ...]:
        shape = list(self.source.shapes[self.key])
        shape[0] = len(range(shape[0])[self.rows]) + int(self.append_mean_row)
        return tuple(shape)

    def materialize(self, dtype: torch.dtype) -> torch.Tensor:
        tensor = self.source.read(self.key, self.rows)
        # Always a fresh tensor: memory-mapped sources and q/k/v thirds must not share storage in a shard file.
        converted = torch.empty(self.shape(), dtype=dtype)
        converted[: tensor.shape[0]].copy_(tensor)
        if self.append_mean_row:
            converted[tensor.shape[0] :].copy_(tensor.mean(0, keepdim=True, dtype=torch.float32))
        return converted


def map_keys(
    source: CheckpointTensors,
    rules: KeyRules,
    dropped: list[str] = (),
    source_prefix: str = "",
    target_prefix: str = "",
) -> tuple[dict[str, TensorRecipe], list[tuple[str, str]]]:
    """Recipes for every source tensor a rule renames, and `(source name, key)` of those with no (free) place."""
    recipes, unexpected = {}, []
    for key, shape in source.shapes.items():
        name = key.removeprefix(source_prefix)
        if any(re.fullmatch(pattern, name) for pattern in dropped):
            continue
        rule = next(((pattern, targets) for pattern, targets in rules if re.fullmatch(pattern, name)), None)
        targets = [target_prefix + re.sub(rule[0], target, name) for target in rule[1]] if rule else []
        if not targets or any(target in recipes for target in targets):
            unexpected.append((source.name, key))
            continue
        rows_per_target = shape[0] // len(targets)
        for index, target in enumerate(targets):
            rows = slice(index * rows_per_target, (index + 1) * rows_per_target) if len(targets) > 1 else slice(None)
            recipes[target] = TensorRecipe(source, key, rows)
    return recipes, unexpected


def conversion_recipes(
    llm: CheckpointTensors, vision: CheckpointTensors, projector: CheckpointTensors
) -> tuple[dict[str, TensorRecipe], list[tuple[str, str]]]:
    """Recipes for the whole converted model, plus every source tensor that has no place in it."""
    llm_recipes, llm_unexpected = map_keys(llm, LLM_RULES, LLM_DROPPED)
    vision_recipes, vision_unexpected = map_keys(vision, VISION_RULES, VISION_DROPPED)
    projector_recipes, projector_unexpected = map_keys(
        projector, PROJECTOR_RULES, source_prefix=PROJECTOR_PREFIX, target_prefix="model.multi_modal_projector."
    )
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key in llm_recipes:
            llm_recipes[key] = TensorRecipe(llm, llm_recipes[key].key, append_mean_row=True)
    unexpected = llm_unexpected + vision_unexpected + projector_unexpected
    return {**vision_recipes, **projector_recipes, **llm_recipes}, unexpected


def check_recipes_fill_the_model(
    recipes: dict[str, TensorRecipe], target_shapes: dict[str, torch.Size], unexpected_sources: list[tuple[str, str]]
) -> None:
    """Every tensor of the model comes from one source tensor of the right shape, and no source is left over."""
    problems = [
        f"missing {key} {format_shape(tuple(shape))}" for key, shape in target_shapes.items() if key not in recipes
    ]
    problems += [f"{source} tensor {key} has no place in the model" for source, key in unexpected_sources]
    problems += [
        f"{recipe.source.name} tensor {recipe.key} has no place in the model (it would be {key})"
        for key, recipe in recipes.items()
        if key not in target_shapes
    ]
    problems += [
        f"{key} (from {recipe.key}): shape {format_shape(recipe.shape())}, expected {format_shape(tuple(target_shapes[key]))}"
        for key, recipe in recipes.items()
        if key in target_shapes and recipe.shape() != tuple(target_shapes[key])
    ]
    if problems:
        raise ValueError(
            f"The source checkpoints do not fill the converted model; {len(problems)} problem(s):\n  "
            + "\n  ".join(problems)
        )


def sub_config_fields(config: PreTrainedConfig) -> dict:
    """A source config as a sub-config: the architecture only, not the fields of a checkpoint of its own."""
    return {key: value for key, value in config.to_diff_dict().items() if key not in CHECKPOINT_ONLY_FIELDS}


def build_config(
    text_config: PreTrainedConfig,
    vision_config: PreTrainedConfig,
    sizes: QFormerSizes,
    qformer_heads: int,
    image_token_id: int,
    dtype: torch.dtype,
) -> PreTrainedConfig:
    """Our config: the source configs, the vocabulary grown by `<image>`, the original fusion and Q-Former sizes."""
    config_class = load_repo_class("VisionZephyrConfig")
    # The original pads with EOS when the LLM has no pad token (train.py), and ships `pad_token_id` 2.
    pad_token_id = text_config.eos_token_id if text_config.pad_token_id is None else text_config.pad_token_id
    config = config_class(
        vision_config=sub_config_fields(vision_config),
        text_config={**sub_config_fields(text_config), "vocab_size": image_token_id + 1, "pad_token_id": pad_token_id},
        image_token_id=image_token_id,
        vision_feature_layers=original_fusion_groups(vision_config.num_hidden_layers),
        num_query_tokens=sizes.num_queries,
        qformer_num_layers=sizes.num_blocks,
        qformer_num_attention_heads=qformer_heads,
        qformer_intermediate_size=sizes.intermediate_size,
        tile_size=vision_config.image_size,
    )
    config.auto_map = dict(AUTO_MAP)
    config.architectures = ["VisionZephyrForConditionalGeneration"]
    config.dtype = dtype
    return config


def target_shapes_on_meta_device(config: PreTrainedConfig) -> dict[str, torch.Size]:
    """The converted model's state dict shapes, from the model built on the meta device (no memory used)."""
    model_class = load_repo_class("VisionZephyrForConditionalGeneration")
    with torch.device("meta"):
        model = model_class(config)
    return {key: tensor.shape for key, tensor in model.state_dict().items()}


def plan_shards(target_shapes: dict[str, torch.Size], dtype: torch.dtype, max_shard_size: int | str) -> StateDictSplit:
    """The shard files and their tensors, with the same rule and names as `save_pretrained`."""
    element_size = torch.empty((), dtype=dtype).element_size()
    return split_state_dict_into_shards_factory(
        {key: shape.numel() * element_size for key, shape in target_shapes.items()},
        get_storage_size=lambda nbytes: nbytes,
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=convert_file_size_to_int(max_shard_size),
    )


def remove_earlier_weights(output_dir: Path) -> None:
    """Weights of an earlier run would shadow or mix with the new ones; `save_pretrained` removes them too."""
    for path in output_dir.glob("model*.safetensors*"):
        path.unlink()


def write_shards(
    recipes: dict[str, TensorRecipe], split: StateDictSplit, dtype: torch.dtype, output_dir: Path, num_parameters: int
) -> None:
    """Materializes tensors shard by shard, so that at most one shard is held in memory."""
    element_size = torch.empty((), dtype=dtype).element_size()
    with tqdm(total=split.metadata["total_size"], unit="B", unit_scale=True, desc="Converting") as progress:
        for filename, keys in split.filename_to_tensors.items():
            shard = {}
            for key in keys:
                shard[key] = recipes[key].materialize(dtype)
                progress.update(shard[key].numel() * element_size)
            save_file(shard, output_dir / filename, metadata={"format": "pt"})
            del shard
    open_tensor_reader.cache_clear()
    if split.is_sharded:
        index = {
            "metadata": {"total_parameters": num_parameters, **split.metadata},
            "weight_map": split.tensor_to_filename,
        }
        (output_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def repo_has_processor() -> bool:
    return all((REPO_ROOT / name).exists() for name in PROCESSOR_FILES)


def check_repo_tokenizer(llm_dir: Path, image_token_id: int) -> None:
    """The repository's tokenizer (Zephyr's + `<image>`) is used; says how the LLM folder's own one differs."""
    if not repo_has_processor():
        logger.warning(
            "The repository root has no processor files (%s); the output gets no tokenizer or processor.",
            ", ".join(PROCESSOR_FILES),
        )
        return
    tokenizer = AutoTokenizer.from_pretrained(REPO_ROOT, trust_remote_code=True)
    repo_image_id = tokenizer.convert_tokens_to_ids("<image>")
    if repo_image_id != image_token_id:
        raise ValueError(
            f"The repository's tokenizer has `<image>` = {repo_image_id}, but the LLM has {image_token_id} tokens, "
            f"so the grown vocabulary puts `<image>` at {image_token_id}."
        )
    if not any((llm_dir / name).exists() for name in TOKENIZER_FILES):
        return
    repo_vocab = tokenizer.get_vocab().items()
    llm_vocab = AutoTokenizer.from_pretrained(llm_dir).get_vocab().items()
    differing = sorted({pair for pair in repo_vocab ^ llm_vocab if pair[1] < image_token_id})
    if differing:
        logger.warning(
            "The LLM folder's tokenizer differs from the repository's in %d token/id pairs (e.g. %s); the "
            "repository's tokenizer, verified against the original's ids, is written to the output.",
            len(differing),
            differing[:3],
        )
    else:
        logger.info("The LLM folder's tokenizer has the repository's vocabulary, `<image>` aside.")


def generation_config_for(llm_dir: Path, config: PreTrainedConfig) -> GenerationConfig:
    """The repository's generation config, else the LLM's, else one derived from the model config."""
    for folder in (REPO_ROOT, llm_dir):
        if (folder / "generation_config.json").is_file():
            return GenerationConfig.from_pretrained(folder)
    return GenerationConfig.from_model_config(config)


def parameter_counts(target_shapes: dict[str, torch.Size]) -> dict[str, int]:
    """Parameters per component (vision tower, projector, language model, LM head) and in total."""
    counts: dict[str, int] = {}
    for key, shape in target_shapes.items():
        component = key.split(".")[1] if key.startswith("model.") else key.split(".")[0]
        counts[component] = counts.get(component, 0) + shape.numel()
    counts["total"] = sum(counts.values())
    return counts


def describe_layout(target_shapes: dict[str, torch.Size], split: StateDictSplit) -> str:
    lines = [f"{name:>24}: {count:,}" for name, count in parameter_counts(target_shapes).items()]
    lines.append(f"{split.metadata['total_size'] / 1e9:.2f} GB in {len(split.filename_to_tensors)} file(s):")
    for filename, keys in split.filename_to_tensors.items():
        size = sum(target_shapes[key].numel() for key in keys)
        lines.append(f"  {filename}: {len(keys)} tensors, {size:,} parameters, {keys[0]} ... {keys[-1]}")
    return "\n".join(lines)


def report_full_model(dtype: torch.dtype, max_shard_size: int | str) -> str:
    """Parameter count and shard layout of the full 7B model (the repository's `config.json`), on the meta device."""
    config = load_repo_class("VisionZephyrConfig").from_pretrained(REPO_ROOT)
    target_shapes = target_shapes_on_meta_device(config)
    return describe_layout(target_shapes, plan_shards(target_shapes, dtype, max_shard_size))


def convert_original_checkpoint(
    projector_path: Path,
    output_dir: Path,
    llm: str = DEFAULT_LLM,
    vision: str = DEFAULT_VISION,
    dtype: torch.dtype = torch.bfloat16,
    max_shard_size: int | str = "5GB",
    qformer_heads: int = ORIGINAL_QFORMER_HEADS,
) -> Path:
    """Converts the original checkpoint into a complete Vision-Zephyr repository folder.

    Args:
        projector_path (`Path`): the original `mm_projector.bin` (or `.safetensors` with the same keys).
        output_dir (`Path`): folder to write; created if needed.
        llm (`str`): Zephyr-7B-beta folder or Hub id.
        vision (`str`): CLIP folder or Hub id (`CLIPVisionModel` or full `CLIPModel`).
        dtype (`torch.dtype`): dtype of every written tensor.
        max_shard_size (`int` or `str`): largest shard file, e.g. `"5GB"`.
        qformer_heads (`int`): attention heads of the Q-Former (not stored in the file; the original uses 8).

    Returns:
        `Path`: `output_dir`.
    """
    projector = load_projector(Path(projector_path))
    llm_dir, vision_dir = resolve_model_folder(llm), resolve_model_folder(vision)
    text_config = AutoConfig.from_pretrained(llm_dir)
    vision_config = vision_config_from(AutoConfig.from_pretrained(vision_dir))
    fusion_groups = original_fusion_groups(vision_config.num_hidden_layers)
    sizes = qformer_sizes(projector.shapes, text_config.hidden_size, vision_config.hidden_size, len(fusion_groups))
    validate_projector(projector, sizes, projector_path)
    image_token_id = text_config.vocab_size  # `<image>` is the one token appended to the LLM's vocabulary
    check_repo_tokenizer(llm_dir, image_token_id)
    config = build_config(text_config, vision_config, sizes, qformer_heads, image_token_id, dtype)

    target_shapes = target_shapes_on_meta_device(config)
    llm_tensors = CheckpointTensors("LLM", checkpoint_files(llm_dir))
    vision_tensors = CheckpointTensors("CLIP", checkpoint_files(vision_dir))
    recipes, unexpected = conversion_recipes(llm_tensors, vision_tensors, projector)
    check_recipes_fill_the_model(recipes, target_shapes, unexpected)
    split = plan_shards(target_shapes, dtype, max_shard_size)
    logger.info("Converted model:\n%s", describe_layout(target_shapes, split))

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_earlier_weights(output_dir)
    write_shards(recipes, split, dtype, output_dir, sum(shape.numel() for shape in target_shapes.values()))
    config.save_pretrained(output_dir)
    generation_config_for(llm_dir, config).save_pretrained(output_dir)
    copy_code_and_processor_files(output_dir)
    logger.info("Vision-Zephyr checkpoint written to %s", output_dir)
    return output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default=DEFAULT_LLM, help="Zephyr-7B-beta folder or Hub id (default: %(default)s)")
    parser.add_argument("--vision", default=DEFAULT_VISION, help="CLIP folder or Hub id (default: %(default)s)")
    parser.add_argument("--projector", type=Path, help="the original mm_projector.bin (or .safetensors)")
    parser.add_argument("--output", type=Path, help="folder to write the converted repository into")
    parser.add_argument("--dtype", choices=list(DTYPES), default="bfloat16", help="dtype of the written weights")
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default: %(default)s)")
    parser.add_argument(
        "--qformer-heads",
        type=int,
        default=ORIGINAL_QFORMER_HEADS,
        help="Q-Former attention heads; not stored in the projector file, the original uses %(default)s",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="print the parameter count and shard layout of the full model (repository config.json) and exit",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.report:
        print(report_full_model(DTYPES[args.dtype], args.max_shard_size))
        return
    if args.projector is None or args.output is None:
        parser.error("--projector and --output are required (unless --report)")
    try:
        convert_original_checkpoint(
            args.projector,
            args.output,
            llm=args.llm,
            vision=args.vision,
            dtype=DTYPES[args.dtype],
            max_shard_size=args.max_shard_size,
            qformer_heads=args.qformer_heads,
        )
    except (ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\n")


if __name__ == "__main__":
    main()
