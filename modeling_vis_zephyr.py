"""PyTorch Vision-Zephyr: multi-layer CLIP features -> Q-Former (or MLP) projector -> Mistral (Zephyr) decoder."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple

from .configuration_vis_zephyr import VisionZephyrConfig, hidden_states_request, keep_logits
from .image_processing_anyres import anyres_grid_shape, num_image_tokens, num_tiles_from_grid


logger = logging.get_logger(__name__)

IGNORE_INDEX = -100
# Kernels the Q-Former can use; anything else (flash/flex backends: head dim 512 is beyond flash-attention, and the
# projector's query/key lengths differ) is served by SDPA for the projector only.
PROJECTOR_ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def projector_attention_implementation(config: VisionZephyrConfig) -> str:
    """The attention kernel the Q-Former runs with: the model's own when it can serve, else SDPA (said once)."""
    requested = config._attn_implementation or "sdpa"
    if requested in PROJECTOR_ATTENTION_IMPLEMENTATIONS:
        return requested
    logger.warning_once(
        f"The Q-Former projector cannot run with attn_implementation={requested!r} (its head dim is "
        f"{config.text_config.hidden_size // config.qformer_num_attention_heads}); it uses 'sdpa' instead. "
        "The vision tower and the language model keep the requested implementation."
    )
    return "sdpa"


def expand_key_padding_mask(key_mask: torch.Tensor, dtype: torch.dtype, implementation: str) -> torch.Tensor:
    """`(batch, kv_len)` bool (True = attend) -> the `(batch, 1, 1, kv_len)` mask the kernel expects."""
    key_mask = key_mask[:, None, None, :]
    if implementation == "eager":
        return torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device).masked_fill(
            ~key_mask, torch.finfo(dtype).min
        )
    return key_mask


def fuse_vision_layers(hidden_states: tuple[torch.Tensor, ...], layer_groups: list[list[int]]) -> torch.Tensor:
    """Averages the hidden states of each group and concatenates the groups on the channel axis, CLS dropped."""
    group_means = [torch.stack([hidden_states[i][:, 1:] for i in group]).mean(0) for group in layer_groups]
    return torch.cat(group_means, dim=-1)


@dataclass
class VisionZephyrModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    image_hidden_states (`torch.Tensor`, *optional*):
        Projected visual tokens of all images, `(total_visual_tokens, hidden_size)`.
    """

    image_hidden_states: torch.Tensor | None = None


@dataclass
class VisionZephyrCausalLMOutputWithPast(ModelOutput):
    r"""
    loss (`torch.Tensor` of shape `(1,)`, *optional*, returned when `labels` is provided):
        Next-token prediction loss.
    logits (`torch.Tensor` of shape `(batch_size, sequence_length, vocab_size)`):
        Prediction scores of the language modeling head.
    past_key_values (`Cache`, *optional*):
        The key/value cache of the language model.
    image_hidden_states (`torch.Tensor`, *optional*):
        Projected visual tokens of all images, `(total_visual_tokens, hidden_size)`.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.Tensor] | None = None
    attentions: tuple[torch.Tensor] | None = None
    image_hidden_states: torch.Tensor | None = None


class VisionZephyrQFormerAttention(nn.Module):
    """Multi-head attention of `queries` over `key_value_states` (which may be wider than the queries)."""

    def __init__(self, config: VisionZephyrConfig, key_value_size: int):
        super().__init__()
        self.config = config
        hidden_size = config.text_config.hidden_size
        self.num_heads = config.qformer_num_attention_heads
        self.head_dim = hidden_size // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(key_value_size, hidden_size)
        self.v_proj = nn.Linear(key_value_size, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def attend(
        self,
        query_states: torch.Tensor,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(batch, heads, length, dim)` states -> `(batch, length, heads, dim)` through the attention dispatch."""
        implementation = projector_attention_implementation(self.config)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attention_mask = None
        if key_padding_mask is not None:
            attention_mask = expand_key_padding_mask(key_padding_mask, query_states.dtype, implementation)
        attn_output, _ = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            scaling=self.scaling,
            dropout=0.0,
            is_causal=False,
        )
        return attn_output

    def forward(
        self,
        queries: torch.Tensor,
        key_value_states: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch_size, num_queries, _ = queries.shape
        split_heads = (batch_size, -1, self.num_heads, self.head_dim)
        query_states = self.q_proj(queries).view(split_heads).transpose(1, 2)
        key_states = self.k_proj(key_value_states).view(split_heads).transpose(1, 2)
        value_states = self.v_proj(key_value_states).view(split_heads).transpose(1, 2)
        attn_output = self.attend(query_states, key_states, value_states, key_padding_mask)
        return self.o_proj(attn_output.reshape(batch_size, num_queries, -1))


class VisionZephyrQFormerCrossAttention(VisionZephyrQFormerAttention):
    """The queries' attention over a tile's fused patches, computed in the patches' own feature space.

    Projecting every patch to keys and values costs 2 × 576 × 5120 × 4096 multiply-adds per block and tile in the 7B
    model, over 4/5 of the Q-Former's work, for only 32 queries. Keys and values are linear in the patches, so the same
    attention is obtained by moving the key projection onto the queries (q · W_k x = (W_kᵀ q) · x) and the value
    projection after the weighted sum (Σ p W_v x = W_v Σ p x). All heads then attend over the same patches, so they
    become query rows of a single head: 6.5× fewer multiply-adds in the 7B cross-attention (fewer whenever the head
    dim exceeds the number of queries). The key bias adds the same q · b_k to all scores of a query, which softmax
    ignores; the value bias is added once, as each query's attention weights sum to 1.

    This needs `k_proj` and `v_proj` to be plain linear layers with their weights at hand. PEFT adapters (LoRA) and
    quantised layers replace them with modules whose output is not `x @ weight.T + bias`, and layers offloaded by
    accelerate hold their weights on "meta" until their own forward loads them, so then the patches are projected
    the usual way.
    """

    def forward(self, queries: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        projections = (self.k_proj, self.v_proj)
        if not all(type(layer) is nn.Linear and not layer.weight.is_meta for layer in projections):
            return super().forward(queries, image_features)
        batch_size, num_queries, _ = queries.shape
        feature_size = image_features.shape[-1]
        query_states = self.q_proj(queries).view(batch_size, num_queries, self.num_heads, self.head_dim)
        key_weight = self.k_proj.weight.view(self.num_heads, self.head_dim, feature_size)
        value_weight = self.v_proj.weight.view(self.num_heads, self.head_dim, feature_size)
        feature_queries = torch.einsum("bqhd,hdc->bhqc", query_states, key_weight)
        patches = image_features[:, None]
        attended = self.attend(feature_queries.reshape(batch_size, 1, -1, feature_size), patches, patches)
        attended = attended.view(batch_size, self.num_heads, num_queries, feature_size)
        head_outputs = torch.einsum("bhqc,hdc->bqhd", attended, value_weight).reshape(batch_size, num_queries, -1)
        return self.o_proj(head_outputs + self.v_proj.bias)


class VisionZephyrQFormerMLP(nn.Module):
    def __init__(self, config: VisionZephyrConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.text_config.hidden_size, config.qformer_intermediate_size)
        self.act = nn.GELU()  # exact (erf) GELU, as the original
        self.fc2 = nn.Linear(config.qformer_intermediate_size, config.text_config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class VisionZephyrQFormerLayer(GradientCheckpointingLayer):
    """Pre-norm block: self-attention (optionally over queries + text), cross-attention to the tile, FFN."""

    def __init__(self, config: VisionZephyrConfig):
        super().__init__()
        hidden_size, eps = config.text_config.hidden_size, config.qformer_layer_norm_eps
        self.self_attn_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.self_attn = VisionZephyrQFormerAttention(config, key_value_size=hidden_size)
        self.cross_attn_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.cross_attn = VisionZephyrQFormerCrossAttention(config, key_value_size=config.fused_vision_hidden_size)
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = VisionZephyrQFormerMLP(config)

    def forward(
        self,
        queries: torch.Tensor,
        image_features: torch.Tensor,
        text_context: torch.Tensor | None = None,
        text_context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        normed_queries = self.self_attn_norm(queries)
        if text_context is None:
            queries = queries + self.self_attn(normed_queries, normed_queries)
        else:
            # The original runs this block over [queries ; text] and then keeps the query rows. Everything after the
            # self-attention is row-wise, so attending from the queries only to [queries ; text] is the same result.
            keys = torch.cat([normed_queries, self.self_attn_norm(text_context)], dim=1)
            query_mask = text_context_mask.new_ones(text_context_mask.shape[0], queries.shape[1])
            key_mask = torch.cat([query_mask, text_context_mask], dim=1)
            queries = queries + self.self_attn(normed_queries, keys, key_padding_mask=key_mask)
        queries = queries + self.cross_attn(self.cross_attn_norm(queries), image_features)
        return queries + self.mlp(self.mlp_norm(queries))


class VisionZephyrQFormer(nn.Module):
    """Compresses each tile's fused patch features into `num_query_tokens` LLM-width tokens."""

    def __init__(self, config: VisionZephyrConfig):
        super().__init__()
        hidden_size, eps = config.text_config.hidden_size, config.qformer_layer_norm_eps
        self.pre_norm = nn.LayerNorm(config.fused_vision_hidden_size, eps=eps)
        self.query_tokens = nn.Parameter(torch.zeros(config.num_query_tokens, hidden_size))
        self.layers = nn.ModuleList([VisionZephyrQFormerLayer(config) for _ in range(config.qformer_num_layers)])
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(
        self,
        fused_features: torch.Tensor,
        text_context: torch.Tensor | None = None,
        text_context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            fused_features (`torch.Tensor` of shape `(num_tiles, num_patches, fused_vision_hidden_size)`)
            text_context (`torch.Tensor` of shape `(num_tiles, text_length, hidden_size)`, *optional*):
                Embeddings of the prompt text each tile's first block also attends to.
            text_context_mask (`torch.BoolTensor` of shape `(num_tiles, text_length)`, *optional*):
                False for positions of `text_context` that are padding.

        Returns:
            `torch.Tensor` of shape `(num_tiles, num_query_tokens, hidden_size)`.
        """
        image_features = self.pre_norm(fused_features)
        queries = self.query_tokens.expand(image_features.shape[0], -1, -1).to(image_features.dtype)
        for index, layer in enumerate(self.layers):
            if index == 0 and text_context is not None:
                queries = layer(queries, image_features, text_context, text_context_mask)
            else:
                queries = layer(queries, image_features)
        return self.norm(queries)


class VisionZephyrMLPProjector(nn.Module):
    """LLaVA's `mlp2x_gelu`: one LLM token per patch (the seed's ablation)."""

    def __init__(self, config: VisionZephyrConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.fused_vision_hidden_size, config.text_config.hidden_size)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(config.text_config.hidden_size, config.text_config.hidden_size)

    def forward(self, fused_features: torch.Tensor, **unused_text_context) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(fused_features)))


class VisionZephyrPreTrainedModel(PreTrainedModel):
    config: VisionZephyrConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["VisionZephyrQFormerLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    # The decode step (language model + head; images are read at prefill only) compiles as one graph with a static
    # cache: tests/test_compile.py.
    _can_compile_fullgraph = True

    @classmethod
    def from_pretrained(cls, *args, use_safetensors: bool | None = True, **kwargs):
        """`PreTrainedModel.from_pretrained`, reading weights from safetensors only unless told otherwise.

        transformers falls back to a pickled `pytorch_model.bin` when a folder has no safetensors; Vision-Zephyr
        checkpoints always ship safetensors, so that fallback is off. `use_safetensors=False` turns it back on
        (the file is then read with `torch.load(weights_only=True)`, which refuses pickled code).
        """
        return super().from_pretrained(*args, use_safetensors=use_safetensors, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VisionZephyrQFormer):
            init.normal_(module.query_tokens, mean=0.0, std=1.0)  # the original's torch.randn queries


class VisionZephyrModel(VisionZephyrPreTrainedModel):
    """The vision tower, the projector and the language model without its head."""

    def __init__(self, config: VisionZephyrConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        projector_class = VisionZephyrQFormer if config.projector_type == "qformer" else VisionZephyrMLPProjector
        self.multi_modal_projector = projector_class(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        """Loading the full checkpoint through `AutoModel` leaves the LM head out on purpose: not reported.

        Not `_keys_to_ignore_on_load_unexpected`: vLLM turns that list into rules that drop the matching weights
        from the whole checkpoint, which would leave its LM head uninitialised.
        """
        super()._adjust_missing_and_unexpected_keys(loading_info)
        loading_info.unexpected_keys = {key for key in loading_info.unexpected_keys if not key.startswith("lm_head.")}

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    @property
    def conditions_on_text(self) -> bool:
        """Whether the Q-Former's first block reads the prompt text (`qformer_input_ids`)."""
        return self.config.qformer_text_conditioning and self.config.projector_type == "qformer"

    @property
    def visual_tokens_per_tile(self) -> int:
        if self.config.projector_type == "qformer":
            return self.config.num_query_tokens
        return (self.config.vision_config.image_size // self.config.vision_config.patch_size) ** 2

    def image_grid_shapes(
        self, image_sizes: torch.Tensor | None, image_grids: torch.Tensor | None
    ) -> list[tuple[int, int]]:
        """`(rows, cols)` of every image's tile grid: `image_grids` as given, else derived from `image_sizes`."""
        if image_grids is not None:
            return [tuple(grid) for grid in torch.as_tensor(image_grids).tolist()]
        if image_sizes is None:
            raise ValueError("`pixel_values` need `image_grids` or `image_sizes` (both as returned by the processor).")
        return [
            anyres_grid_shape(tuple(size), self.config.image_grid_pinpoints, self.config.tile_size)
            for size in torch.as_tensor(image_sizes).tolist()
        ]

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_sizes: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        Runs the vision tower on every real tile, fuses its layers and projects each tile to visual tokens.

        This is the one way images enter the model: `forward` calls it, and so do serving engines (vLLM's
        Transformers backend), with the processor's outputs sliced per image. Everything the projector reads comes
        in through these arguments, the prompt text of the Q-Former's first block included.

        Args:
            pixel_values (`torch.Tensor` of shape `(num_images, max_tiles, 3, tile_size, tile_size)`):
                Tiles per image (base view first, then the grid row-major), zero-padded on the tile axis.
            image_sizes (`torch.Tensor` of shape `(num_images, 2)`, *optional*):
                `(height, width)` of each original image; used to find the grid when `image_grids` is not given.
            image_grids (`torch.Tensor` of shape `(num_images, 2)`, *optional*):
                `(rows, cols)` of each image's tile grid, as chosen by the processor.
            qformer_input_ids (`torch.LongTensor` of shape `(num_images, text_length)`, *optional*):
                Ids of the prompt text that the first Q-Former block of each image's tiles attends to (the
                processor's output of that name). Required while `qformer_text_conditioning` is on.
            qformer_attention_mask (`torch.Tensor` of shape `(num_images, text_length)`, *optional*):
                0 marks padding in `qformer_input_ids`.

        Returns:
            [`BaseModelOutputWithPooling`] whose `last_hidden_state` holds the fused tile features and
            `pooler_output` a tuple with one `(visual_tokens, hidden_size)` tensor per image.
        """
        if pixel_values.dim() != 5:
            raise ValueError(
                f"`pixel_values` must have shape (num_images, max_tiles, 3, {self.config.tile_size}, "
                f"{self.config.tile_size}), got {tuple(pixel_values.shape)}."
            )
        tiles_per_image = [num_tiles_from_grid(grid) for grid in self.image_grid_shapes(image_sizes, image_grids)]
        if len(tiles_per_image) != pixel_values.shape[0] or max(tiles_per_image) > pixel_values.shape[1]:
            raise ValueError(
                f"`pixel_values` {tuple(pixel_values.shape)} do not hold the {tiles_per_image} tiles that the image "
                "grids ask for; pass the processor's `pixel_values` with its `image_grids`/`image_sizes`."
            )
        tiles = torch.cat([image[:count] for image, count in zip(pixel_values, tiles_per_image, strict=True)])
        # No `.to(device)`: offloaded towers sit on "meta" and accelerate's hooks move inputs where weights run.
        tiles = tiles.to(dtype=self.vision_tower.dtype)

        needed_layers = hidden_states_request([i for group in self.config.vision_feature_layers for i in group])
        vision_outputs = self.vision_tower(tiles, output_hidden_states=needed_layers, return_dict=True, **kwargs)
        fused_features = fuse_vision_layers(vision_outputs.hidden_states, self.config.vision_feature_layers)

        projector_inputs = {}
        if self.conditions_on_text:
            text_context, text_context_mask = self.qformer_text_context(qformer_input_ids, qformer_attention_mask)
            counts = torch.tensor(tiles_per_image, device=text_context.device)
            projector_inputs = {
                "text_context": text_context.repeat_interleave(counts, dim=0).to(fused_features),
                "text_context_mask": text_context_mask.repeat_interleave(counts, dim=0).to(fused_features.device),
            }
        visual_tokens = self.multi_modal_projector(fused_features, **projector_inputs)
        per_image = torch.split(
            visual_tokens.flatten(0, 1), [count * self.visual_tokens_per_tile for count in tiles_per_image]
        )
        return BaseModelOutputWithPooling(last_hidden_state=fused_features, pooler_output=per_image)

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """`(batch, seq_len)` bool mask of the `<image>` placeholder positions."""
        if input_ids is not None:
            return input_ids == self.config.image_token_id
        image_token_embedding = self.get_input_embeddings()(
            torch.tensor(self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
        )
        return (inputs_embeds == image_token_embedding).all(-1)

    def image_sample_indices(self, placeholder_mask: torch.Tensor, tokens_per_image: list[int]) -> torch.Tensor:
        """Index of the sample each image belongs to; checks that placeholders and images agree."""
        tokens_per_sample = placeholder_mask.sum(-1)
        total_placeholders, total_features = int(tokens_per_sample.sum()), sum(tokens_per_image)
        if total_placeholders != total_features:
            raise ValueError(
                f"Image features and image tokens do not match: the input has {total_placeholders} `<image>` "
                f"placeholder tokens but the {len(tokens_per_image)} image(s) give {total_features} visual tokens "
                f"({tokens_per_image}). Build the inputs with the processor, which expands every `<image>`."
            )
        sample_ends = tokens_per_sample.cumsum(0).cpu()
        image_ends = torch.tensor(tokens_per_image).cumsum(0)
        first_sample = torch.searchsorted(sample_ends, image_ends - torch.tensor(tokens_per_image), right=True)
        last_sample = torch.searchsorted(sample_ends, image_ends - 1, right=True)
        if not torch.equal(first_sample, last_sample):
            raise ValueError("An image's `<image>` placeholder tokens are split across two samples of the batch.")
        return first_sample

    def qformer_text_context(
        self, qformer_input_ids: torch.LongTensor | None, qformer_attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of each image's Q-Former text and its `(num_images, text_length)` bool mask."""
        if qformer_input_ids is None:
            raise ValueError(
                "`qformer_input_ids` are required while `qformer_text_conditioning` is on: pass the processor's "
                "`qformer_input_ids` and `qformer_attention_mask` (the prompt text each image's Q-Former reads)."
            )
        embeddings = self.get_input_embeddings()(qformer_input_ids)
        if qformer_attention_mask is None:
            return embeddings, torch.ones(qformer_input_ids.shape, dtype=torch.bool, device=embeddings.device)
        return embeddings, qformer_attention_mask.to(embeddings.device).bool()

    def qformer_inputs_from_prompt(
        self,
        input_ids: torch.LongTensor | None,
        placeholder_mask: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.LongTensor | None,
        image_samples: torch.Tensor,
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """`qformer_input_ids` and mask derived from the prompt: its sample's non-image tokens, minus padding and labels.

        The processor computes the same ids; this serves callers without them (training batches, hand-built ids).
        Deliberate fixes over the original, which showed padding and the training target to the projector.
        """
        if input_ids is None:
            raise ValueError(
                "With `inputs_embeds` and text conditioning on, pass the processor's `qformer_input_ids` and "
                "`qformer_attention_mask`: the Q-Former's text cannot be recovered from embeddings."
            )
        text_mask = ~placeholder_mask
        if attention_mask is not None and attention_mask.dim() == 2:
            text_mask &= attention_mask.bool()
        if labels is not None:
            text_mask &= labels == IGNORE_INDEX
        lengths = text_mask.sum(-1)
        packed_length = max(int(lengths.max()), 1)
        slots = text_mask.cumsum(-1) - 1
        packed = input_ids.new_zeros(input_ids.shape[0], packed_length)
        sample_index = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(text_mask)
        packed[sample_index[text_mask], slots[text_mask]] = input_ids[text_mask]
        packed_mask = torch.arange(packed_length, device=lengths.device)[None, :] < lengths[:, None]
        image_samples = image_samples.to(input_ids.device)
        return packed[image_samples], packed_mask[image_samples]

    def encode_images(
        self,
        pixel_values: torch.Tensor,
        image_sizes: torch.Tensor | None,
        image_grids: torch.Tensor | None,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.LongTensor | None,
        qformer_input_ids: torch.LongTensor | None,
        qformer_attention_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual tokens of all images, in placeholder order, and the placeholder mask they fill."""
        placeholder_mask = self.get_placeholder_mask(input_ids, inputs_embeds)
        grids = self.image_grid_shapes(image_sizes, image_grids)
        tokens_per_image = [num_image_tokens(grid, self.visual_tokens_per_tile) for grid in grids]
        image_samples = self.image_sample_indices(placeholder_mask, tokens_per_image)
        if self.conditions_on_text and qformer_input_ids is None:
            qformer_input_ids, qformer_attention_mask = self.qformer_inputs_from_prompt(
                input_ids, placeholder_mask, attention_mask, labels, image_samples
            )
        image_outputs = self.get_image_features(
            pixel_values,
            image_grids=torch.tensor(grids),
            qformer_input_ids=qformer_input_ids,
            qformer_attention_mask=qformer_attention_mask,
        )
        image_features = torch.cat(image_outputs.pooler_output).to(inputs_embeds.device, inputs_embeds.dtype)
        return image_features, placeholder_mask

    def check_prompt(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        has_images: bool,
    ) -> None:
        """Rejects prompts the model cannot read: placeholders without images, or longer than the LLM's context.

        Without this, `<image>` placeholders would enter the LLM as the bare `<image>` embedding (garbage answers),
        and positions past `max_position_embeddings` would run silently off the trained range.
        """
        if input_ids is not None and not has_images:
            num_placeholders = int((input_ids == self.config.image_token_id).sum())
            if num_placeholders:
                raise ValueError(
                    f"`input_ids` hold {num_placeholders} `<image>` placeholder tokens but no `pixel_values` were "
                    "given: pass the processor's `pixel_values` and `image_grids` with them (e.g. "
                    "`model.generate(**processor(text=..., images=...))`), or remove the image from the prompt."
                )
        # Engines (vLLM) pack several requests into one row: their positions, not the row's length, say how far each
        # prompt reaches.
        if position_ids is not None and position_ids.numel():
            prompt_length = int(position_ids.max()) + 1
        else:
            prompt_length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        max_length = self.config.text_config.max_position_embeddings
        if prompt_length > max_length:
            raise ValueError(
                f"The prompt is {prompt_length} tokens (visual tokens included) but the language model's context is "
                f"`max_position_embeddings={max_length}`: shorten the text, pass fewer images or a smaller "
                "`max_tiles` to the processor."
            )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        image_grids: torch.LongTensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VisionZephyrModelOutputWithPast:
        r"""
        Args:
            pixel_values (`torch.Tensor` of shape `(num_images, max_tiles, 3, tile_size, tile_size)`, *optional*):
                Tiles from [`VisionZephyrImageProcessor`]; only needed on the first (prefill) step.
            image_sizes (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
                `(height, width)` of each original image.
            image_grids (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
                `(rows, cols)` of each image's tile grid; wins over `image_sizes` when both are given.
            qformer_input_ids (`torch.LongTensor` of shape `(num_images, text_length)`, *optional*):
                The prompt text each image's Q-Former reads, as the processor returns it. Derived from `input_ids`
                when not given (the same ids); never together with `labels`.
            qformer_attention_mask (`torch.Tensor` of shape `(num_images, text_length)`, *optional*):
                0 marks padding in `qformer_input_ids`.
            labels (`torch.LongTensor`, *optional*):
                Only used to hide labelled (answer) tokens from the Q-Former's text conditioning.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        if labels is not None and qformer_input_ids is not None:
            raise ValueError(
                "`qformer_input_ids` cannot be combined with `labels`: the Q-Former must not read the labelled answer. "
                "Leave `qformer_input_ids` out when training; they are then derived from `input_ids` without labels."
            )
        has_images = pixel_values is not None and pixel_values.shape[0] > 0
        if past_key_values is None or past_key_values.get_seq_length() == 0:
            self.check_prompt(input_ids, inputs_embeds, position_ids, has_images)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        image_features = None
        if has_images:
            image_features, placeholder_mask = self.encode_images(
                pixel_values,
                image_sizes,
                image_grids,
                input_ids,
                inputs_embeds,
                attention_mask,
                labels,
                qformer_input_ids,
                qformer_attention_mask,
            )
            inputs_embeds = inputs_embeds.masked_scatter(placeholder_mask.unsqueeze(-1), image_features)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return VisionZephyrModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
        )


class VisionZephyrForConditionalGeneration(VisionZephyrPreTrainedModel, GenerationMixin):
    """Vision-Zephyr with the language-modeling head: the class to `generate()` with and to fine-tune."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: VisionZephyrConfig):
        super().__init__(config)
        self.model = VisionZephyrModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """See [`VisionZephyrModel.get_image_features`]."""
        return self.model.get_image_features(pixel_values, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        image_grids: torch.LongTensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VisionZephyrCausalLMOutputWithPast:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Targets for the next-token loss; `-100` marks positions without a loss (prompt, image, padding).
                Labelled tokens are also hidden from the Q-Former's text conditioning.
            logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
                Compute logits only for the last `logits_to_keep` positions (0 = all), or for the given indices.

        See [`VisionZephyrModel.forward`] for the image arguments.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            image_grids=image_grids,
            qformer_input_ids=qformer_input_ids,
            qformer_attention_mask=qformer_attention_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        hidden_states = keep_logits(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return VisionZephyrCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )


__all__ = ["VisionZephyrForConditionalGeneration", "VisionZephyrModel", "VisionZephyrPreTrainedModel"]
