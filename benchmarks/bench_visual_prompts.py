"""Cost of drawing visual prompts before anyres tiling: a 1920×1080 image with 8 prompts, against tiling alone.

Both are timed in the same run, interleaved; medians (and best times) are compared. Target: drawing adds < 30 % to
tiling.

    python benchmarks/bench_visual_prompts.py --repeats 30
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm


REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from visual_prompts import draw_visual_prompts  # noqa: E402


IMAGE_SIZE = (1920, 1080)
TILE_SIZE = 336
# The original's pinpoints as (height, width), in its order.
GRID_PINPOINTS = [[672, 336], [336, 672], [1008, 336], [336, 1008]]
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


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


def tile_stand_in(image: Image.Image) -> np.ndarray:
    """The same work as the anyres tiler, written out until `VisionZephyrImageProcessor` is available."""
    width, height = image.size
    candidates = [(canvas_width, canvas_height) for canvas_height, canvas_width in GRID_PINPOINTS]
    canvas_width, canvas_height = max(
        candidates,
        key=lambda size: (
            min(
                int(width * min(size[0] / width, size[1] / height))
                * int(height * min(size[0] / width, size[1] / height)),
                width * height,
            ),
            -size[0] * size[1],
        ),
    )
    scale = min(canvas_width / width, canvas_height / height)
    resized = image.resize((int(width * scale), int(height * scale)), Image.LANCZOS)
    canvas = Image.new("RGB", (canvas_width, canvas_height))
    canvas.paste(resized, ((canvas_width - resized.width) // 2, (canvas_height - resized.height) // 2))
    tiles = [image.resize((TILE_SIZE, TILE_SIZE), Image.LANCZOS)] + [
        canvas.crop((left, top, left + TILE_SIZE, top + TILE_SIZE))
        for top in range(0, canvas_height, TILE_SIZE)
        for left in range(0, canvas_width, TILE_SIZE)
    ]
    pixels = np.stack([np.asarray(tile, dtype=np.float32) for tile in tiles]) / 255.0
    return ((pixels - CLIP_MEAN) / CLIP_STD).transpose(0, 3, 1, 2)


def milliseconds(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return 1000 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds of each variant (default: 30)")
    arguments = parser.parse_args()

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*IMAGE_SIZE[::-1], 3), dtype=np.uint8))
    prompts = benchmark_prompts()
    tile_stand_in(draw_visual_prompts(image, prompts))  # warm-up: fonts, allocator

    tiling, drawing, drawing_and_tiling = [], [], []
    for _ in tqdm(range(arguments.repeats), desc="rounds"):
        tiling.append(milliseconds(tile_stand_in, image))
        drawing.append(milliseconds(draw_visual_prompts, image, prompts))
        drawing_and_tiling.append(milliseconds(lambda: tile_stand_in(draw_visual_prompts(image, prompts))))

    print(f"image {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, {len(prompts)} prompts, {arguments.repeats} rounds: median (best)")
    for name, timings in [
        ("tiling alone", tiling),
        ("drawing alone", drawing),
        ("drawing + tiling", drawing_and_tiling),
    ]:
        print(f"{name:<18}{statistics.median(timings):7.1f} ms ({min(timings):5.1f} ms)")
    overhead = statistics.median(drawing_and_tiling) / statistics.median(tiling) - 1
    best_overhead = min(drawing_and_tiling) / min(tiling) - 1
    print(f"{'overhead':<18}{overhead:7.1%}    ({best_overhead:5.1%})    target < 30 %")


if __name__ == "__main__":
    main()
