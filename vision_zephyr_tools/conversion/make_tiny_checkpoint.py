"""Write a complete, self-contained Vision-Zephyr checkpoint folder with tiny random weights.

Same layout as the converted 7B model (config with auto_map, the remote-code files, safetensors, tokenizer,
processor config, chat template), so the whole code path can be tried and tested without any download:

    vision-zephyr make-tiny-checkpoint /tmp/tiny-vis-zephyr
    python -c "from transformers import AutoModelForImageTextToText as M; M.from_pretrained('/tmp/tiny-vis-zephyr', trust_remote_code=True)"
"""

import argparse
import shutil
from pathlib import Path

import torch
from transformers import AutoProcessor, GenerationConfig

from vision_zephyr_tools.remote_code import AUTO_MAP, REMOTE_CODE_FILES, REPO_ROOT, load_repo_class


PROCESSOR_FILES = ["processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]

TINY_VISION_CONFIG = {
    "model_type": "clip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 24,  # the original's fusion groups index layers 4..24
    "num_attention_heads": 4,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 32,
}
TINY_TEXT_CONFIG = {
    "model_type": "mistral",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    # Head dim 32: the smallest vLLM's CPU attention supports (32, 64, 80, ...), so the checkpoint can be served.
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 32001,
    "max_position_embeddings": 4096,
    "sliding_window": 4096,
    "pad_token_id": 2,
}


def tiny_config(projector_type: str = "qformer", **overrides):
    config_class = load_repo_class("VisionZephyrConfig")
    config = config_class(
        vision_config=TINY_VISION_CONFIG,
        text_config=TINY_TEXT_CONFIG,
        projector_type=projector_type,
        **{"qformer_num_layers": 2, "qformer_num_attention_heads": 4, **overrides},
    )
    config.auto_map = dict(AUTO_MAP)
    return config


def copy_code_and_processor_files(output_dir: Path, visual_tokens_per_tile: int | None = None) -> None:
    """Copies the remote-code files and saves the repository's processor (re-targeted to the model's tokens per tile)."""
    for name in REMOTE_CODE_FILES:
        shutil.copy2(REPO_ROOT / name, output_dir / name)
    if all((REPO_ROOT / name).exists() for name in PROCESSOR_FILES):
        processor = AutoProcessor.from_pretrained(REPO_ROOT, trust_remote_code=True)
        if visual_tokens_per_tile is not None:
            # `<image>` expands by the model's tokens per tile: its queries, or every patch for the MLP projector.
            processor.num_query_tokens = visual_tokens_per_tile
        processor.save_pretrained(output_dir)


def make_tiny_checkpoint(output_dir: Path, seed: int = 0, projector_type: str = "qformer") -> Path:
    """Builds a tiny random Vision-Zephyr and saves it with every file `from_pretrained` needs."""
    torch.manual_seed(seed)
    model_class = load_repo_class("VisionZephyrForConditionalGeneration")
    model = model_class(tiny_config(projector_type)).eval()
    model.generation_config = GenerationConfig.from_pretrained(REPO_ROOT)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    copy_code_and_processor_files(output_dir, model.model.visual_tokens_per_tile)
    return output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--projector-type", choices=["qformer", "mlp2x_gelu"], default="qformer")
    args = parser.parse_args()
    path = make_tiny_checkpoint(args.output_dir, args.seed, args.projector_type)
    print(f"tiny Vision-Zephyr checkpoint written to {path}")


if __name__ == "__main__":
    main()
