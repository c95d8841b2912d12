"""Vision-Zephyr configuration: CLIP vision tower + Q-Former projector + Mistral (Zephyr) decoder."""

import re

import transformers


# The oldest transformers the remote code works with: 5.19, what the released vLLM and SGLang builds pin
# (requirements.txt pins the tested 5.23.0; CI also runs the tests under 5.19). This file is the first that
# `trust_remote_code` imports, so the check runs before any import that an older release would fail on.
MINIMUM_TRANSFORMERS_VERSION = (5, 19)


def check_transformers_version(installed: str) -> None:
    """Raises an `ImportError` naming both versions when `installed` is older than `MINIMUM_TRANSFORMERS_VERSION`."""
    required = ".".join(map(str, MINIMUM_TRANSFORMERS_VERSION))
    match = re.match(r"(\d+)\.(\d+)", installed)
    if match is None or tuple(map(int, match.groups())) < MINIMUM_TRANSFORMERS_VERSION:
        raise ImportError(
            f"Vision-Zephyr needs transformers>={required}, but transformers {installed} is installed. "
            f"Upgrade with `pip install -U 'transformers>={required}'`."
        )


check_transformers_version(transformers.__version__)

from typing import Literal  # noqa: E402

from huggingface_hub.dataclasses import strict  # noqa: E402
from transformers import AutoConfig, PreTrainedConfig, configuration_utils  # noqa: E402
from transformers.models.auto.configuration_auto import CONFIG_MAPPING  # noqa: E402
from transformers.utils import output_capturing  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------------
# Differences between the supported transformers releases (5.19 to 5.23), all handled here. The other remote-code
# files import these helpers (`from .configuration_vis_zephyr import ...`) instead of the APIs that differ:
# - `SubConfigSpec` (5.20+) declares sub-config defaults, which also keeps them out of the saved config.json; 5.19 has a
#   plain `sub_configs` mapping. The class declares whichever exists; `build_sub_config` builds them on every release.
# - `slice_logits_to_keep` (5.20+, also takes boolean masks): `keep_logits` falls back to the int/index slice.
# - `output_hidden_states=[indices]` (5.20+; 5.19's CLIP raises IndexError): `hidden_states_request` asks 5.19 for all.
# - `ProcessorMixin._merge_kwargs` takes the kwargs class positionally in 5.19 (optional later): callers pass it.
# - A `ProcessingKwargs` subclass needs a `_defaults` dict in 5.19: the processor's declares an empty one.
# ---------------------------------------------------------------------------------------------------------------------
SELECTS_HIDDEN_STATES = hasattr(output_capturing, "selected_hidden_states")
SubConfigSpec = getattr(configuration_utils, "SubConfigSpec", None)


def build_sub_config(value: dict | PreTrainedConfig | None, model_type: str, defaults: dict) -> PreTrainedConfig:
    """A sub-config from a config, a dict (its `model_type`, else `model_type`) or `None` (`defaults`)."""
    if isinstance(value, PreTrainedConfig):
        return value
    if value is None:
        value = defaults
    if not isinstance(value, dict):
        raise TypeError(f"A sub-config must be a dict, a PreTrainedConfig or None, got {type(value).__name__}.")
    value = {"model_type": model_type, **value}
    return CONFIG_MAPPING[value["model_type"]](**value)


def keep_logits(hidden_states, logits_to_keep):
    """`hidden_states` at the positions `logits_to_keep` selects (0 = all, n = the last n, or indices)."""
    from transformers import modeling_utils  # imported here: processor-only users never load modeling_utils

    slice_logits_to_keep = getattr(modeling_utils, "slice_logits_to_keep", None)
    if slice_logits_to_keep is not None:
        return slice_logits_to_keep(hidden_states, logits_to_keep)
    positions = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
    return hidden_states[:, positions, :]


def hidden_states_request(indices: list[int]) -> list[int] | bool:
    """The `output_hidden_states` value that gives at least the hidden states `indices` name."""
    return sorted(indices) if SELECTS_HIDDEN_STATES else True


# The trained original averages CLIP layers 4-8, 9-13, 14-18, 19-23 and appends layer 24 (hidden_states indices).
ORIGINAL_VISION_FEATURE_LAYERS = [
    [4, 5, 6, 7, 8],
    [9, 10, 11, 12, 13],
    [14, 15, 16, 17, 18],
    [19, 20, 21, 22, 23],
    [24],
]
# The original config lists (width, height) pairs; stored here as (height, width), order kept so ties resolve the same.
ORIGINAL_GRID_PINPOINTS = [[672, 336], [336, 672], [1008, 336], [336, 1008]]
# Zephyr-7B-beta's values where they differ from MistralConfig's defaults, plus the `<image>` row.
ZEPHYR_TEXT_CONFIG = {
    "vocab_size": 32001,
    "pad_token_id": 2,
    "sliding_window": 4096,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
}
# CLIP ViT-L/14-336.
CLIP_VISION_CONFIG = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 336,
    "projection_dim": 768,
}


@strict
class VisionZephyrConfig(PreTrainedConfig):
    r"""
    Configuration of a [`VisionZephyrForConditionalGeneration`]. The defaults are the original Vision-Zephyr 7B model:
    CLIP ViT-L/14-336, a 32-query, 8-block Q-Former and Zephyr-7B-beta with the `<image>` token added (vocab 32001).

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the vision tower (`clip_vision_model` by default).
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the language model (`mistral` by default).
        image_token_id (`int`, *optional*, defaults to 32000):
            Id of the `<image>` placeholder token; the processor writes one per visual token.
        vision_feature_layers (`list[list[int]]`, *optional*):
            Groups of `hidden_states` indices of the vision tower. Each group is averaged, the group results are
            concatenated on the channel axis (CLS dropped). `[[-2], [-5], [-8], [-11], [6]]` is ViP-LLaVA's choice.
        projector_type (`str`, *optional*, defaults to `"qformer"`):
            `"qformer"` (the original) or `"mlp2x_gelu"` (LLaVA's 2-layer MLP, one visual token per patch).
        num_query_tokens (`int`, *optional*, defaults to 32):
            Learned queries of the Q-Former, i.e. visual tokens per tile.
        qformer_num_layers (`int`, *optional*, defaults to 8):
            Q-Former blocks (self-attention, cross-attention to the tile, FFN).
        qformer_num_attention_heads (`int`, *optional*, defaults to 8):
            Heads of every Q-Former attention; the head dim is the LLM width divided by this.
        qformer_intermediate_size (`int`, *optional*):
            FFN width of the Q-Former; defaults to twice the LLM width.
        qformer_layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of every Q-Former LayerNorm.
        qformer_text_conditioning (`bool`, *optional*, defaults to `True`):
            Whether block 0 of the Q-Former also attends to the embeddings of the prompt's text tokens.
        tile_size (`int`, *optional*, defaults to 336):
            Side of the square tiles the vision tower sees.
        image_grid_pinpoints (`list[list[int]]`, *optional*):
            Candidate anyres canvases as `(height, width)`; the first of tied candidates wins.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Zephyr does not tie its input and output embeddings.
    """

    model_type = "vis_zephyr"
    if SubConfigSpec is None:
        sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}
    else:
        sub_configs_defaults = {
            "text_config": SubConfigSpec(AutoConfig, model_type="mistral", init_kwargs=ZEPHYR_TEXT_CONFIG),
            "vision_config": SubConfigSpec(AutoConfig, model_type="clip_vision_model", init_kwargs=CLIP_VISION_CONFIG),
        }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32000
    vision_feature_layers: list | None = None
    projector_type: Literal["qformer", "mlp2x_gelu"] = "qformer"
    num_query_tokens: int = 32
    qformer_num_layers: int = 8
    qformer_num_attention_heads: int = 8
    qformer_intermediate_size: int | None = None
    qformer_layer_norm_eps: float = 1e-5
    qformer_text_conditioning: bool = True
    tile_size: int = 336
    image_grid_pinpoints: list | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        self.text_config = build_sub_config(self.text_config, "mistral", ZEPHYR_TEXT_CONFIG)
        self.vision_config = build_sub_config(self.vision_config, "clip_vision_model", CLIP_VISION_CONFIG)
        super().__post_init__(**kwargs)
        if self.vision_feature_layers is None:
            self.vision_feature_layers = [list(group) for group in ORIGINAL_VISION_FEATURE_LAYERS]
        if self.image_grid_pinpoints is None:
            self.image_grid_pinpoints = [list(pinpoint) for pinpoint in ORIGINAL_GRID_PINPOINTS]
        if self.qformer_intermediate_size is None:
            self.qformer_intermediate_size = 2 * self.text_config.hidden_size
        self._validate_vision_zephyr_fields()

    def _validate_vision_zephyr_fields(self) -> None:
        groups = self.vision_feature_layers
        if not groups or not all(isinstance(group, list) and group for group in groups):
            raise ValueError(
                f"`vision_feature_layers` must be a non-empty list of non-empty lists of hidden-state indices, "
                f"got {groups!r}."
            )
        num_hidden_states = self.vision_config.num_hidden_layers + 1
        out_of_range = [i for group in groups for i in group if not -num_hidden_states <= i < num_hidden_states]
        if out_of_range:
            raise ValueError(
                f"`vision_feature_layers` indices {out_of_range} are outside the vision tower's {num_hidden_states} "
                f"hidden states."
            )
        if self.text_config.hidden_size % self.qformer_num_attention_heads:
            raise ValueError(
                f"The LLM width ({self.text_config.hidden_size}) must be divisible by `qformer_num_attention_heads` "
                f"({self.qformer_num_attention_heads})."
            )
        if self.vision_config.image_size != self.tile_size:
            raise ValueError(
                f"`tile_size` ({self.tile_size}) must equal the vision tower's `image_size` "
                f"({self.vision_config.image_size})."
            )
        for pinpoint in self.image_grid_pinpoints:
            if len(pinpoint) != 2 or any(side <= 0 or side % self.tile_size for side in pinpoint):
                raise ValueError(
                    f"`image_grid_pinpoints` entries must be (height, width) multiples of `tile_size` "
                    f"({self.tile_size}), got {pinpoint!r}."
                )

    @property
    def fused_vision_hidden_size(self) -> int:
        """Channels per patch after layer fusion: one vision width per averaged group."""
        return self.vision_config.hidden_size * len(self.vision_feature_layers)


__all__ = ["VisionZephyrConfig"]
