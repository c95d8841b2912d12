"""Convert the original release into a Hub checkpoint, write tiny checkpoints, rebuild the tokenizer."""
