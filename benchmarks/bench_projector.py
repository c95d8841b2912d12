"""One Q-Former block at the 7B widths (config.json: LLM width 4096, 5 × 1024 fused CLIP channels, 8 heads, FFN 8192):
its cross-attention computed in the patches' feature space (the model's) against projecting every patch to keys and
values (the textbook computation, which the model used before), alone and inside the whole block.

Random float32 weights on CPU, `--tiles` tiles of 576 patches with 32 queries each and a 30-token text context;
interleaved runs, medians. The 7B projector runs 8 such blocks on every tile (3 tiles for a 1920×1080 image).

    python benchmarks/bench_projector.py --repeats 5
"""

import argparse
import copy
import functools
import sys
import types

import torch
from transformers import AutoConfig

from vision_zephyr_tools.benchmark_harness import REPO_ROOT, interleaved_medians, load_repo_class, milliseconds


TEXT_TOKENS = 30


def build_blocks(config) -> dict[str, torch.nn.Module]:
    """The model's block, and a copy whose cross-attention projects every patch (`VisionZephyrQFormerAttention`)."""
    modeling = sys.modules[load_repo_class("VisionZephyrForConditionalGeneration").__module__]
    torch.manual_seed(0)
    block = modeling.VisionZephyrQFormerLayer(config).eval()
    textbook = copy.deepcopy(block)
    textbook.cross_attn.forward = types.MethodType(modeling.VisionZephyrQFormerAttention.forward, textbook.cross_attn)
    return {"feature space (now)": block, "every patch projected (before)": textbook}


def block_inputs(config, tiles: int) -> dict[str, torch.Tensor]:
    width = config.text_config.hidden_size
    return {
        "queries": torch.randn(tiles, config.num_query_tokens, width),
        "image_features": torch.randn(tiles, 576, config.fused_vision_hidden_size),
        "text_context": torch.randn(tiles, TEXT_TOKENS, width),
        "text_context_mask": torch.ones(tiles, TEXT_TOKENS, dtype=torch.bool),
    }


def time_block(block, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    return {
        "cross_attention_ms": milliseconds(lambda: block.cross_attn(inputs["queries"], inputs["image_features"])),
        "block_ms": milliseconds(lambda: block(**inputs)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per variant")
    parser.add_argument("--tiles", type=int, default=1, help="tiles per forward")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = AutoConfig.from_pretrained(REPO_ROOT, trust_remote_code=True)
    blocks, inputs = build_blocks(config), block_inputs(config, args.tiles)
    with torch.inference_mode():
        candidates = {name: functools.partial(time_block, block, inputs) for name, block in blocks.items()}
        for measure in candidates.values():
            measure()  # warm-up
        medians = interleaved_medians(candidates, args.repeats, "interleaved block runs")

    print(f"one 7B Q-Former block, {args.tiles} tile(s), float32, medians of {args.repeats}, threads {args.threads}")
    print(f"{'cross-attention':>32} | {'cross-attention ms':>18} | {'whole block ms':>14}")
    for name, metrics in medians.items():
        print(f"{name:>32} | {metrics['cross_attention_ms']:>18.1f} | {metrics['block_ms']:>14.1f}")
    now, before = medians["feature space (now)"], medians["every patch projected (before)"]
    print(
        f"speed-up: cross-attention {before['cross_attention_ms'] / now['cross_attention_ms']:.2f}×, "
        f"whole block {before['block_ms'] / now['block_ms']:.2f}×"
    )


if __name__ == "__main__":
    main()
