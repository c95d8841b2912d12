"""Cost of drawing visual prompts before anyres tiling: a 1920×1080 image with 8 prompts, against tiling alone.

Both go through `VisionZephyrImageProcessor` (loaded as remote code), timed in the same run, interleaved; medians
(and best times) are compared. Target: drawing adds < 30 % to tiling.

    python benchmarks/bench_visual_prompts.py --repeats 30
"""

import argparse
import statistics

import numpy as np
from PIL import Image
from tqdm import tqdm
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from vision_zephyr_tools.benchmark_harness import REPO_ROOT, milliseconds
from vision_zephyr_tools.remote_code import load_repo_module


draw_visual_prompts = load_repo_module("visual_prompts").draw_visual_prompts


IMAGE_SIZE = (1920, 1080)


def elliptic_mask(center: tuple[int, int], radii: tuple[int, int]) -> np.ndarray:
    rows, columns = np.mgrid[: IMAGE_SIZE[1], : IMAGE_SIZE[0]]
    return ((columns - center[0]) / radii[0]) ** 2 + ((rows - center[1]) / radii[1]) ** 2 < 1


def benchmark_prompts() -> list[dict]:
    """One prompt of every type, with a label, at the default (image-scaled) widths."""
    return [
        {"type": "box", "xyxy": [100, 120, 700, 560], "color": "red", "label": "1"},
        {"type": "ellipse", "xyxy": [800, 100, 1300, 500], "color": "lime", "label": "2"},
        {"type": "arrow", "xyxy": [1850, 80, 1450, 420], "color": "yellow", "label": "3"},
        {"type": "point", "xy": [1650, 700], "color": "fuchsia", "label": "4"},
        {
            "type": "scribble",
            "points": [[80, 1000], [300, 700], [520, 980], [760, 720]],
            "color": "aqua",
            "label": "5",
        },
        {"type": "triangle", "points": [[900, 1040], [1100, 620], [1350, 1000]], "color": "orange", "label": "6"},
        {"type": "mask", "mask": elliptic_mask((1500, 900), (250, 140)), "color": "blue", "label": "7"},
        {"type": "mask_contour", "mask": elliptic_mask((450, 330), (200, 150)), "color": "gold", "label": "8"},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds of each variant (default: 30)")
    parser.add_argument("--fast-resize", action="store_true", help="tile with the processor's opt-in fast resize")
    arguments = parser.parse_args()

    image_processor_class = get_class_from_dynamic_module(
        "image_processing_anyres.VisionZephyrImageProcessor", str(REPO_ROOT)
    )
    image_processor = image_processor_class(fast_resize=arguments.fast_resize)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*IMAGE_SIZE[::-1], 3), dtype=np.uint8))
    prompts = benchmark_prompts()
    variants = {
        "tiling alone": lambda: image_processor(image, return_tensors="pt"),
        "drawing alone": lambda: draw_visual_prompts(image, prompts),
        "drawing + tiling": lambda: image_processor(image, visual_prompts=prompts, return_tensors="pt"),
    }
    timings = {name: [] for name in variants}
    for function in variants.values():
        function()  # warm-up: fonts, allocator
    for _ in tqdm(range(arguments.repeats), desc="rounds"):
        for name, function in variants.items():
            timings[name].append(milliseconds(function))

    resize = "fast resize" if arguments.fast_resize else "original LANCZOS"
    print(
        f"image {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, {len(prompts)} prompts, {resize}, {arguments.repeats} rounds: median (best)"
    )
    for name, values in timings.items():
        print(f"{name:<18}{statistics.median(values):7.1f} ms ({min(values):5.1f} ms)")
    tiling, drawing_and_tiling = timings["tiling alone"], timings["drawing + tiling"]
    overhead = statistics.median(drawing_and_tiling) / statistics.median(tiling) - 1
    best_overhead = min(drawing_and_tiling) / min(tiling) - 1
    print(f"{'overhead':<18}{overhead:7.1%}    ({best_overhead:5.1%})    target < 30 %")


if __name__ == "__main__":
    main()
