"""Anyres preprocessing speed: `VisionZephyrImageProcessor` against transformers' `LlavaNextImageProcessorPil`.

Both produce the same geometry (336 tiles, Vision-Zephyr's pinpoints, base view + grid, float32 tensors), timed
interleaved in one run on 640×480, 1920×1080 and 4032×3024 RGB images, one image per call and batches of 8 (one
call with a list of 8 images, reported per image), with 2 torch threads and with 1 (PIL is single-threaded either
way); medians are compared. Ours runs in the default exact mode (our LANCZOS, bit-exact to the original's Pillow
11.2.1) and in the opt-in `fast_resize` mode.

    python benchmarks/bench_processor.py --repeats 15 --batch-sizes 1 8 --threads 2 1
    python benchmarks/bench_processor.py --repeats 7 --batch-sizes 1 --new-size-every-call   # a stream of sizes
"""

import argparse
import functools
import itertools
from collections.abc import Iterator

import torch
from tqdm import tqdm
from transformers import LlavaNextImageProcessorPil
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from vision_zephyr_tools.benchmark_harness import (
    REPO_ROOT,
    add_image_sizes_argument,
    interleaved_medians,
    milliseconds,
    photo_like_image,
)


def processors() -> dict:
    ours = get_class_from_dynamic_module("image_processing_anyres.VisionZephyrImageProcessor", str(REPO_ROOT))()
    llava = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=ours.image_grid_pinpoints,
    )
    return {
        "ours (exact)": lambda images: ours(images, return_tensors="pt"),
        "ours (fast_resize)": lambda images: ours(images, fast_resize=True, return_tensors="pt"),
        "LlavaNextImageProcessorPil": lambda images: llava(images, return_tensors="pt"),
    }


def ms_per_image_of_next(process, images: Iterator, batch_size: int) -> dict[str, float]:
    """Times `process` on `batch_size` copies of the next of `images`."""
    batch = [next(images)] * batch_size
    return {"ms": milliseconds(lambda: process(batch)) / batch_size}


def measure(
    candidates: dict, image_size: tuple[int, int], batch_size: int, repeats: int, new_sizes: bool = False
) -> dict[str, float]:
    """Median ms per image of every processor on `batch_size` copies of one image, interleaved.

    With `new_sizes`, each call gets an image one pixel wider and taller than the previous one (the same sequence
    for every processor), as a stream of photos of varying sizes: our resize plans (cached per size) are then
    computed on every call."""
    width, height = image_size
    growths = range(repeats + 1) if new_sizes else [0]  # the warm-up and each timed call, or one image for all
    sequence = [photo_like_image(width + grow, height + grow) for grow in growths]
    timed = {
        name: functools.partial(ms_per_image_of_next, process, itertools.cycle(sequence), batch_size)
        for name, process in candidates.items()
    }
    for run in timed.values():
        run()  # warm-up
    medians = interleaved_medians(timed, repeats, f"{image_size[0]}×{image_size[1]} × {batch_size}")
    return {name: metrics["ms"] for name, metrics in medians.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per image size and processor")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="images per processor call")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch thread counts to compare")
    parser.add_argument(
        "--new-size-every-call",
        action="store_true",
        help="grow the image by a pixel each call, so that no call reuses the resize plans of an earlier size",
    )
    add_image_sizes_argument(parser)
    args = parser.parse_args()

    candidates = processors()
    cases = [
        (threads, size, batch) for threads in args.threads for batch in args.batch_sizes for size in args.image_sizes
    ]
    results = {}
    for threads, size, batch in tqdm(cases, desc="cases"):
        torch.set_num_threads(threads)
        results[threads, size, batch] = measure(candidates, size, batch, args.repeats, args.new_size_every_call)

    sizes = ", a new image size every call" if args.new_size_every_call else ""
    print(f"median ms per image over {args.repeats} interleaved runs{sizes}")
    header = f"{'threads':>7} | {'image':>10} | {'batch':>5} | " + " | ".join(f"{name:>26}" for name in candidates)
    print(header + " | exact × | fast ×", "-" * (len(header) + 19), sep="\n")
    for (threads, size, batch), medians in results.items():
        baseline = medians["LlavaNextImageProcessorPil"]
        cells = " | ".join(f"{medians[name]:>26.1f}" for name in candidates)
        exact, fast = baseline / medians["ours (exact)"], baseline / medians["ours (fast_resize)"]
        print(f"{threads:>7} | {size[0]:>5}×{size[1]:<4} | {batch:>5} | {cells} | {exact:>7.2f} | {fast:>6.2f}")


if __name__ == "__main__":
    main()
