"""Anyres preprocessing speed: `VisionZephyrImageProcessor` against transformers' `LlavaNextImageProcessorPil`.

Both produce the same geometry (336 tiles, Vision-Zephyr's pinpoints, base view + grid, float32 tensors), timed
interleaved in one run on 640×480, 1920×1080 and 4032×3024 RGB images; medians are compared. Ours runs in the
default faithful mode (PIL LANCZOS, bit-exact to the original) and in the opt-in `fast_resize` mode.

    python benchmarks/bench_processor.py --repeats 15
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm
from transformers import LlavaNextImageProcessorPil
from transformers.dynamic_module_utils import get_class_from_dynamic_module


REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZES = [(640, 480), (1920, 1080), (4032, 3024)]


def photo_like_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour fields plus sensor-like noise, so no resampler gets an unrealistically easy input."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    fields = np.stack([np.sin(9 * x + 2 * y), np.cos(7 * y - 3 * x), np.sin(5 * (x + y) + 1)], -1)
    noise = np.random.default_rng(seed).normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(127.5 + 110 * fields + noise, 0, 255).astype(np.uint8), "RGB")


def processors() -> dict:
    ours = get_class_from_dynamic_module("image_processing_anyres.VisionZephyrImageProcessor", str(REPO_ROOT))()
    llava = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=ours.image_grid_pinpoints,
    )
    return {
        "ours (faithful)": lambda image: ours(image, return_tensors="pt"),
        "ours (fast_resize)": lambda image: ours(image, fast_resize=True, return_tensors="pt"),
        "LlavaNextImageProcessorPil": lambda image: llava(image, return_tensors="pt"),
    }


def milliseconds(function, image) -> float:
    start = time.perf_counter()
    function(image)
    return 1000 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per image size and processor")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (fast mode)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    candidates = processors()
    timings = {(size, name): [] for size in IMAGE_SIZES for name in candidates}
    for size in tqdm(IMAGE_SIZES, desc="image sizes"):
        image = photo_like_image(*size)
        for process in candidates.values():
            process(image)  # warm-up
        for _ in range(args.repeats):
            for name, process in candidates.items():
                timings[size, name].append(milliseconds(process, image))

    print(f"median ms/image over {args.repeats} runs, torch threads {args.threads}")
    header = f"{'image':>10} | " + " | ".join(f"{name:>26}" for name in candidates) + " | faithful × | fast ×"
    print(header, "-" * len(header), sep="\n")
    for size in IMAGE_SIZES:
        medians = {name: statistics.median(timings[size, name]) for name in candidates}
        baseline = medians["LlavaNextImageProcessorPil"]
        cells = " | ".join(f"{medians[name]:>26.1f}" for name in candidates)
        faithful, fast = baseline / medians["ours (faithful)"], baseline / medians["ours (fast_resize)"]
        print(f"{size[0]:>5}×{size[1]:<4} | {cells} | {faithful:>10.2f} | {fast:>6.2f}")


if __name__ == "__main__":
    main()
