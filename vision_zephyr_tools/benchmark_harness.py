"""What the model benchmarks share: a small-but-not-trivial Vision-Zephyr config, test images, interleaved timing.

The config keeps what decides the costs being compared (CLIP's 336-px tiles of 577 tokens, the original's five
fusion groups over 24 layers, 32 queries per tile, the original pinpoints) and shrinks the widths so that a CPU run
takes seconds: vision 24 layers × 64, language model 4 layers × 512 with the full 32001-token vocabulary.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from vision_zephyr_tools.remote_code import AUTO_MAP, REPO_ROOT, load_repo_class  # noqa: F401 (REPO_ROOT: for the benchmarks)


IMAGE_SIZES = [(640, 480), (1920, 1080), (4032, 3024)]
BENCH_VISION_CONFIG = {
    "model_type": "clip_vision_model",
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 24,
    "num_attention_heads": 4,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 64,
}
BENCH_TEXT_CONFIG = {
    "model_type": "mistral",
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 32001,
    "max_position_embeddings": 8192,
    "sliding_window": 4096,
    "pad_token_id": 2,
}


def bench_config(**overrides):
    """The benchmark's Vision-Zephyr config: 2 Q-Former blocks with 8 heads (head dim 64), 32 queries per tile."""
    config = load_repo_class("VisionZephyrConfig")(
        vision_config=BENCH_VISION_CONFIG,
        text_config=BENCH_TEXT_CONFIG,
        **{"qformer_num_layers": 2, "qformer_num_attention_heads": 8, **overrides},
    )
    config.auto_map = dict(AUTO_MAP)
    return config


def add_image_sizes_argument(parser: argparse.ArgumentParser) -> None:
    """`--image-sizes WIDTHxHEIGHT ...`, parsed to `(width, height)` tuples; defaults to `IMAGE_SIZES`."""
    parser.add_argument(
        "--image-sizes",
        nargs="+",
        type=lambda size: tuple(int(side) for side in size.split("x")),
        default=IMAGE_SIZES,
        help="WIDTHxHEIGHT of each test image (default: 640x480 1920x1080 4032x3024)",
    )


def photo_like_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour fields plus sensor-like noise, so no resampler gets an unrealistically easy input."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    fields = np.stack([np.sin(9 * x + 2 * y), np.cos(7 * y - 3 * x), np.sin(5 * (x + y) + 1)], -1)
    noise = np.random.default_rng(seed).normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(127.5 + 110 * fields + noise, 0, 255).astype(np.uint8), "RGB")


def milliseconds(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return 1000 * (time.perf_counter() - start)


def interleaved_medians(
    candidates: dict[str, Callable[[], dict[str, float]]], repeats: int, description: str
) -> dict[str, dict[str, float]]:
    """Runs every candidate once per repeat, in turn (so load changes hit all alike); per-metric medians of each."""
    results = {name: [] for name in candidates}
    for _ in tqdm(range(repeats), desc=description, leave=False):
        for name, measure in candidates.items():
            results[name].append(measure())
    return {
        name: {metric: statistics.median(run[metric] for run in runs) for metric in runs[0]}
        for name, runs in results.items()
    }
