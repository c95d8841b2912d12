"""Processor of Vision-Zephyr: Zephyr tokenizer + anyres image processor + visual prompts + `<image>` expansion.

Each `<image>` in the text becomes `num_image_tokens(grid, num_query_tokens)` copies of `<image>` (id 32000), the
positions where the model scatters that image's visual tokens. Everything else (batching, typed kwargs, the
`<image>`/image count check, the truncation check, chat templates) is `ProcessorMixin`'s.
"""

from collections.abc import Mapping, Sequence

from PIL import Image
from transformers.processing_utils import MultiModalData, ProcessorMixin

from .image_processing_anyres import (
    allowed_pinpoints,
    anyres_grid_shape,
    check_visual_prompts_layout,
    flatten_images,
    num_image_tokens,
    num_tiles_from_grid,
    to_rgb_image,
)
from .visual_prompts import draw_visual_prompts


# Keys of a chat image block that hold the image, in the order `ProcessorMixin` collects them.
IMAGE_SOURCE_KEYS = ("image", "url", "path", "base64")
# What the chat template renders: anything else would be dropped from the prompt silently.
CHAT_ROLES = ("system", "user", "assistant")
CONTENT_BLOCK_TYPES = ("text", "image")


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
        return super().prepare_inputs_layout(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def apply_chat_template(self, conversation, *args, **kwargs):
        """`ProcessorMixin.apply_chat_template` after checking the conversation (see `check_conversation`)."""
        check_conversation(conversation)
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

    def _multimodal_inputs_from_conversations(self, conversations, *args, **kwargs):
        """Also collects the `visual_prompts` of image blocks, in the order their images are collected."""
        images, videos, audio, additional_inputs = super()._multimodal_inputs_from_conversations(
            conversations, *args, **kwargs
        )
        visual_prompts = [
            block.get("visual_prompts")
            for conversation in conversations
            for message in conversation
            if not isinstance(message.get("content"), str)
            for block in message.get("content") or []
            if block["type"] == "image"
            for key in IMAGE_SOURCE_KEYS
            if key in block
        ]
        if any(prompts is not None for prompts in visual_prompts):
            additional_inputs = {**additional_inputs, "visual_prompts": visual_prompts}
        return images, videos, audio, additional_inputs

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs) -> MultiModalData:
        """Visual tokens and tiles per image for images of `image_sizes = [(height, width), ...]` (used by vLLM).

        Honours `max_tiles`, `image_grid_pinpoints` and `tile_size` passed as image kwargs, like a processor call.
        """
        if image_sizes is None:
            return MultiModalData()
        images_kwargs = self._merge_kwargs(**kwargs)["images_kwargs"]
        tile_size = images_kwargs.get("tile_size") or self.image_processor.tile_size
        pinpoints = allowed_pinpoints(
            images_kwargs.get("image_grid_pinpoints") or self.image_processor.image_grid_pinpoints,
            tile_size,
            images_kwargs.get("max_tiles", self.image_processor.max_tiles),
        )
        grids = [anyres_grid_shape(tuple(size), pinpoints, tile_size) for size in image_sizes]
        return MultiModalData(
            num_image_tokens=[num_image_tokens(grid, self.num_query_tokens) for grid in grids],
            num_image_patches=[num_tiles_from_grid(grid) for grid in grids],
        )


def check_text(text) -> None:
    """Rejects a `text` argument that is neither a str nor a non-empty list of str (the tokenizer's errors are opaque)."""
    if text is None or isinstance(text, str):
        return
    if not isinstance(text, (list, tuple)) or not all(isinstance(sample, str) for sample in text):
        raise TypeError(f"text: expected a str or a list of str, got {text!r:.80}")
    if not text:
        raise ValueError("text: got an empty list, expected a str or a non-empty list of str")


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
