"""Training recipes (transformers' `Trainer`) and their data: LLaVA-format chats, VCR annotations, the collator."""
