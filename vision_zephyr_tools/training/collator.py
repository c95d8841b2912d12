"""A `Trainer` data collator for Vision-Zephyr chats: images included, loss on the assistant's answers only.

Nothing here is model-specific glue: the processor's chat template marks assistant turns with `{% generation %}`,
so `apply_chat_template(..., return_assistant_tokens_mask=True)` already says which tokens are the answer (its text
and its `</s>`), `<image>` expansion included. The collator only turns that mask into `labels`.

    from vision_zephyr_tools.training.collator import ChatCollator
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=ChatCollator(processor))

where every example is `{"messages": [...]}` in the chat format of `apply_chat_template` (image blocks may carry
`visual_prompts`). Pass `remove_unused_columns=False` in `TrainingArguments`: the examples are not model inputs yet.
"""

from dataclasses import dataclass
from typing import Any

import torch


IGNORE_INDEX = -100


@dataclass
class ChatCollator:
    """Batches chat examples into model inputs with `labels` = the assistant tokens, `-100` everywhere else.

    Args:
        processor (`VisionZephyrProcessor`):
            The model's processor (left padding by default, which training is indifferent to: RoPE is relative).
        messages_key (`str`, *optional*, defaults to `"messages"`):
            Key of the conversation in every example.
        max_length (`int`, *optional*):
            Truncates longer samples on the right (the tail of the last answer goes first). Cutting into the `<image>`
            run is a `ValueError` from the processor rather than a silently broken sample.
    """

    processor: Any
    messages_key: str = "messages"
    max_length: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.processor.apply_chat_template(
            [example[self.messages_key] for example in examples],
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=True,
            processor_kwargs=self.processor_kwargs(),
        )
        assistant_mask = batch.pop("assistant_masks").bool()
        # The processor's Q-Former text holds the answers; the model derives it from the labels instead (hiding them).
        batch.pop("qformer_input_ids", None)
        batch.pop("qformer_attention_mask", None)
        batch["labels"] = batch["input_ids"].masked_fill(~assistant_mask, IGNORE_INDEX)
        return dict(batch)

    def processor_kwargs(self) -> dict[str, Any]:
        if self.max_length is None:
            return {"padding": True}
        return {"padding": True, "truncation": True, "max_length": self.max_length}
