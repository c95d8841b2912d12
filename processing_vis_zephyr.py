"""Processor of Vision-Zephyr: Zephyr tokenizer + anyres image processor + visual prompts + `<image>` expansion.

Each `<image>` in the text becomes `num_image_tokens(grid, num_query_tokens)` copies of `<image>` (id 32000), the
positions where the model scatters that image's visual tokens. With images, the processor also returns, per image, the
prompt text its Q-Former reads (`qformer_input_ids`, `qformer_attention_mask`): the model and serving engines take the
Q-Former's text from there. Everything else (batching, typed kwargs, the `<image>`/image count check, the truncation
check, chat templates) is `ProcessorMixin`'s.
"""

from collections.abc import Mapping, Sequence

from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin, TextKwargs, Unpack

from .image_processing_anyres import (
    VisionZephyrImageProcessorKwargs,
    allowed_pinpoints,
    anyres_grid_shape,
    check_visual_prompts_layout,
    flatten_images,
    num_image_tokens,
    to_rgb_image,
)
from .visual_prompts import draw_visual_prompts


# Keys of a chat image block that hold the image, in the order `ProcessorMixin` collects them.
IMAGE_SOURCE_KEYS = ("image", "url", "path", "base64")
# What the chat template renders: anything else would be dropped from the prompt silently.
CHAT_ROLES = ("system", "user", "assistant")
CONTENT_BLOCK_TYPES = ("text", "image")


class VisionZephyrTextKwargs(TextKwargs, total=False):
    r"""
    qformer_text (`str` or `list[str]`, *optional*):
        The prompt (one per sample, as `text`) whose non-image tokens each image's Q-Former reads; defaults to `text`.
        Serving engines call the processor with placeholder text only, so a vLLM request passes its prompt here:
        `mm_processor_kwargs={"qformer_text": prompt}`. Being a processor kwarg, it also keys vLLM's caches.
    """

    qformer_text: str | list[str] | None


class VisionZephyrProcessorKwargs(ProcessingKwargs, total=False):
    text_kwargs: VisionZephyrTextKwargs
    images_kwargs: VisionZephyrImageProcessorKwargs

    _defaults = {}  # transformers 5.19 reads it from every kwargs class (see configuration_vis_zephyr.py)


class VisionZephyrProcessor(ProcessorMixin):
    r"""
    Processor of Vision-Zephyr.

    Args:
        image_processor (`VisionZephyrImageProcessor`):
            The anyres tiler.
        tokenizer (`PreTrainedTokenizerBase`):
            The Zephyr tokenizer, with `<image>` as a special token.
        chat_template (`str`, *optional*):
            The original `zephyr_v1` conversation format (`chat_template.jinja`).
        num_query_tokens (`int`, *optional*, defaults to 32):
            Visual tokens per tile (the Q-Former's query count; 576 with the MLP projector).
        image_token (`str`, *optional*, defaults to `"<image>"`):
            The placeholder written once per image in prompts and once per visual token in `input_ids`.

    Visual prompts are drawn onto the images before tiling: `processor(text=..., images=..., visual_prompts=[...])`
    with one list of prompt dicts (or `None`) per image, or `{"type": "image", "image": ..., "visual_prompts": [...]}`
    blocks in `apply_chat_template`. They change `pixel_values` only, never the token ids.
    """

    valid_processor_kwargs = VisionZephyrProcessorKwargs

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        num_query_tokens: int = 32,
        image_token: str = "<image>",
        **kwargs,
    ):
        if isinstance(num_query_tokens, bool) or not isinstance(num_query_tokens, int) or num_query_tokens <= 0:
            raise ValueError(f"num_query_tokens: expected a positive int, got {num_query_tokens!r}")
        self.num_query_tokens = num_query_tokens
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"image_token: {image_token!r} is not a token of the tokenizer")
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    def __call__(
        self, images=None, text=None, videos=None, audio=None, **kwargs: Unpack[VisionZephyrProcessorKwargs]
    ) -> BatchFeature:
        """`ProcessorMixin.__call__`, plus the Q-Former's text per image when there are images and text.

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask`, `pixel_values`, `image_sizes`, `image_grids` and,
            with images, `qformer_input_ids` / `qformer_attention_mask` of shape `(num_images, text_length)`: the
            non-image, non-padding tokens of the image's sample (or of its `qformer_text`), right-padded.
        """
        qformer_text = kwargs.pop("qformer_text", None)
        if qformer_text is None:
            qformer_text = kwargs.get("text_kwargs", {}).pop("qformer_text", None)
        check_text(text)
        check_text(qformer_text)
        samples = [text] if isinstance(text, str) else text
        if samples and "add_special_tokens" not in kwargs:
            kwargs["add_special_tokens"] = self.adds_bos(samples, "text")
        inputs = super().__call__(images=images, text=text, videos=videos, audio=audio, **kwargs)
        if images is None or text is None:
            return inputs
        images_per_sample = [sample.count(self.image_token) for sample in samples]
        if qformer_text is None:
            texts_ids = self.qformer_ids_of_batch(inputs["input_ids"], inputs.get("attention_mask"))
        else:
            texts_ids = self.qformer_ids_of_text(qformer_text, len(samples))
        rows = [ids for ids, count in zip(texts_ids, images_per_sample, strict=True) for _ in range(count)]
        return BatchFeature(
            {**inputs, **self.pad_qformer_rows(rows)},
            tensor_type=kwargs.get("return_tensors", kwargs.get("text_kwargs", {}).get("return_tensors")),
            skip_tensor_conversion=self.skip_tensor_conversion,
        )

    def adds_bos(self, samples: list[str], name: str) -> bool:
        """Whether tokenizing `samples` adds BOS: not when they already start with it (the chat template writes it)."""
        starts_with_bos = [sample.startswith(self.tokenizer.bos_token) for sample in samples]
        if any(starts_with_bos) and not all(starts_with_bos):
            raise ValueError(
                f"{name}: either every sample starts with {self.tokenizer.bos_token!r} (as the chat template writes "
                "them) or none does; got a batch that mixes both."
            )
        return not any(starts_with_bos)

    def qformer_ids_of_batch(self, input_ids, attention_mask) -> list[list[int]]:
        """Each sample's non-image, non-padding ids: what the Q-Former of its images reads."""
        input_ids = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        if attention_mask is None:
            attention_mask = [[1] * len(ids) for ids in input_ids]
        attention_mask = attention_mask.tolist() if hasattr(attention_mask, "tolist") else attention_mask
        return [
            [token for token, keep in zip(ids, mask, strict=True) if keep and token != self.image_token_id]
            for ids, mask in zip(input_ids, attention_mask, strict=True)
        ]

    def qformer_ids_of_text(self, qformer_text: str | list[str], num_samples: int) -> list[list[int]]:
        """`qformer_ids_of_batch` for prompts given as `qformer_text`, tokenized as `text` is."""
        samples = [qformer_text] if isinstance(qformer_text, str) else qformer_text
        if len(samples) != num_samples:
            raise ValueError(f"qformer_text: expected one prompt per text sample ({num_samples}), got {len(samples)}")
        ids = self.tokenizer(samples, add_special_tokens=self.adds_bos(samples, "qformer_text"))["input_ids"]
        return self.qformer_ids_of_batch(ids, None)

    def pad_qformer_rows(self, rows: list[list[int]]) -> dict[str, list[list[int]]]:
        """Right-pads the per-image id rows; the mask marks the padding with 0."""
        length = max((len(row) for row in rows), default=0)
        return {
            "qformer_input_ids": [row + [self.tokenizer.pad_token_id] * (length - len(row)) for row in rows],
            "qformer_attention_mask": [[1] * len(row) + [0] * (length - len(row)) for row in rows],
        }

    def prepare_inputs_layout(self, images=None, text=None, videos=None, audio=None, **kwargs):
        check_text(text)
        check_visual_prompts_layout(
            kwargs.get("visual_prompts", kwargs.get("images_kwargs", {}).get("visual_prompts"))
        )
        # Converting here (not only in the image processor) lets the `<image>` count check see every kind of input,
        # including 2-D grayscale arrays that transformers' own flattening rejects.
        if images is not None:
            input_data_format = kwargs.get("input_data_format") or kwargs.get("images_kwargs", {}).get(
                "input_data_format"
            )
            images = [to_rgb_image(image, input_data_format) for image in flatten_images(images)]
        check_image_count(text, images, self.image_token)
        return super().prepare_inputs_layout(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def apply_chat_template(self, conversation, *args, **kwargs):
        """`ProcessorMixin.apply_chat_template` after checking the conversation (see `check_conversation`).

        The `visual_prompts` of image blocks go to the processor call, in the order the images are collected. Images
        passed as `processor_kwargs={"images": [...]}` for image blocks without a source are put into those blocks
        (transformers 5.19 would otherwise pass `images` twice).
        """
        check_conversation(conversation)
        images = (kwargs.get("processor_kwargs") or {}).get("images")
        if kwargs.get("tokenize") and images is not None and sourceless_image_blocks(conversation):
            conversation = with_images_in_blocks(conversation, flatten_images(images))
            kwargs["processor_kwargs"] = {
                key: value for key, value in kwargs["processor_kwargs"].items() if key != "images"
            }
        visual_prompts = visual_prompts_of_chats(conversation)
        if kwargs.get("tokenize") and any(prompts is not None for prompts in visual_prompts):
            kwargs["processor_kwargs"] = {**(kwargs.get("processor_kwargs") or {}), "visual_prompts": visual_prompts}
        return super().apply_chat_template(conversation, *args, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        """The `<image>` run that replaces the image's marker: one placeholder per visual token of its grid."""
        rows, cols = (int(side) for side in image_inputs["image_grids"][image_idx])
        return self.image_token * num_image_tokens((rows, cols), self.num_query_tokens)

    def draw_visual_prompts(self, image: Image.Image, prompts: Sequence[Mapping] | None) -> Image.Image:
        """Draws visual prompts onto a copy of `image`, exactly as the processor does before tiling.

        Args:
            image (`PIL.Image.Image`):
                The image, not modified.
            prompts (`Sequence[Mapping]` or `None`):
                Prompt dicts, see `visual_prompts.py`.

        Returns:
            `PIL.Image.Image`: A new RGB image with the prompts drawn.
        """
        return draw_visual_prompts(image, prompts)

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs) -> MultiModalData:
        """Visual tokens per image for images of `image_sizes = [(height, width), ...]` (used by vLLM).

        Honours `max_tiles`, `image_grid_pinpoints` and `tile_size` passed as image kwargs, like a processor call.
        No `num_image_patches`: with it, vLLM would treat `pixel_values` as flat tiles and concatenate the tiles of
        different images; without it, each image keeps its own `pixel_values` row (tiles zero-padded).
        """
        if image_sizes is None:
            return MultiModalData()
        # transformers 5.19 takes the kwargs class positionally (later releases default to it): pass it everywhere.
        images_kwargs = self._merge_kwargs(self.valid_processor_kwargs, **kwargs)["images_kwargs"]
        tile_size = images_kwargs.get("tile_size") or self.image_processor.tile_size
        pinpoints = allowed_pinpoints(
            images_kwargs.get("image_grid_pinpoints") or self.image_processor.image_grid_pinpoints,
            tile_size,
            images_kwargs.get("max_tiles", self.image_processor.max_tiles),
        )
        grids = [anyres_grid_shape(tuple(size), pinpoints, tile_size) for size in image_sizes]
        return MultiModalData(num_image_tokens=[num_image_tokens(grid, self.num_query_tokens) for grid in grids])


def check_text(text) -> None:
    """Rejects a `text` argument that is neither a str nor a non-empty list of str (the tokenizer's errors are opaque)."""
    if text is None or isinstance(text, str):
        return
    if not isinstance(text, (list, tuple)) or not all(isinstance(sample, str) for sample in text):
        raise TypeError(f"text: expected a str or a list of str, got {text!r:.80}")
    if not text:
        raise ValueError("text: got an empty list, expected a str or a non-empty list of str")


def check_image_count(text, images: list | None, image_token: str) -> None:
    """Rejects text whose `<image>` markers and the images passed differ in number (transformers 5.19 lets it pass)."""
    if text is None:
        return
    num_markers = sum(sample.count(image_token) for sample in ([text] if isinstance(text, str) else text))
    if images is None and num_markers:
        raise ValueError(f"text: found {num_markers} {image_token} tokens in the text but no images were passed.")
    if images is not None and num_markers != len(images):
        raise ValueError(
            f"text: the total number of {image_token} tokens in the prompts should be the same as the number of images "
            f"passed. Found total {num_markers} {image_token} tokens and {len(images)} images."
        )


def image_blocks(conversation) -> list[Mapping]:
    chats = conversation if isinstance(conversation[0], (list, tuple)) else [conversation]
    return [
        block
        for chat in chats
        for message in chat
        if not isinstance(message.get("content"), str)
        for block in message.get("content") or []
        if block["type"] == "image"
    ]


def sourceless_image_blocks(conversation) -> bool:
    """Whether every image block only marks a place (the images come through `processor_kwargs`)."""
    blocks = image_blocks(conversation)
    return bool(blocks) and not any(key in block for block in blocks for key in IMAGE_SOURCE_KEYS)


def with_images_in_blocks(conversation, images: list):
    """A copy of the conversation whose sourceless image blocks hold `images`, in order."""
    if len(images) != len(image_blocks(conversation)):
        raise ValueError(
            f"processor_kwargs['images']: got {len(images)} images for {len(image_blocks(conversation))} image blocks"
        )
    remaining = iter(images)

    def filled(message):
        if isinstance(message.get("content"), str):
            return message
        content = [
            {**block, "image": next(remaining)} if block["type"] == "image" else block for block in message["content"]
        ]
        return {**message, "content": content}

    if isinstance(conversation[0], (list, tuple)):
        return [[filled(message) for message in chat] for chat in conversation]
    return [filled(message) for message in conversation]


def visual_prompts_of_chats(conversation) -> list:
    """The `visual_prompts` of every image block of a chat (or a batch of chats), `None` where a block has none."""
    return [
        block.get("visual_prompts")
        for block in image_blocks(conversation)
        for key in IMAGE_SOURCE_KEYS
        if key in block
    ]


def check_conversation(conversation) -> None:
    """Checks a chat (or a batch of chats) against what the model was trained on.

    Raises:
        `TypeError` or `ValueError` naming the message (and block) when a message is not a dict, has a role other
        than `system` (first message only), `user` and `assistant`, or content other than a str or a list of
        `{"type": "text", "text": str}` and `{"type": "image", ...}` blocks. Such input would otherwise be dropped
        from the prompt without a word (e.g. a video block) or fail deep inside the template.
    """
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise TypeError(f"conversation: expected a non-empty list of messages, got {conversation!r:.80}")
    if isinstance(conversation[0], (list, tuple)):
        for chat in conversation:
            check_conversation(chat)
        return
    for index, message in enumerate(conversation):
        where = f"conversation[{index}]"
        if not isinstance(message, Mapping):
            raise TypeError(f"{where}: expected a dict with 'role' and 'content', got {message!r:.80}")
        allowed_roles = CHAT_ROLES if index == 0 else CHAT_ROLES[1:]
        if message.get("role") not in allowed_roles:
            raise ValueError(
                f"{where}['role']: expected 'user' and 'assistant' turns after an optional first 'system' message, "
                f"got {message.get('role')!r}"
            )
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, (list, tuple)):
            raise TypeError(f"{where}['content']: expected a str or a list of content blocks, got {content!r:.80}")
        for block_index, block in enumerate(content):
            check_content_block(block, f"{where}['content'][{block_index}]")


def check_content_block(block, where: str) -> None:
    if not isinstance(block, Mapping) or block.get("type") not in CONTENT_BLOCK_TYPES:
        raise ValueError(
            f"{where}: expected a {{'type': 'text', 'text': ...}} or {{'type': 'image', ...}} block, got {block!r:.80}"
        )
    if block["type"] == "text" and not isinstance(block.get("text"), str):
        raise TypeError(f"{where}['text']: expected a str, got {block.get('text')!r:.80}")


VisionZephyrProcessor.register_for_auto_class()
