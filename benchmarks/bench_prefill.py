"""Prefill: visual tokens and prefill time per image, Vision-Zephyr against transformers' LLaVA-NeXT.

`LlavaNextForConditionalGeneration` is built with the same CLIP tower and Mistral language model (same configs,
weights copied from Vision-Zephyr), the same tile size and grid pinpoints, and LLaVA-NeXT's own feature choice
(layer -2, CLS dropped, one token per patch, 2-layer MLP projector, unpadding and row-end tokens). Each model gets the
prompt `<image>` + question from its own processor (so the image expands to that model's visual tokens); one
forward with `logits_to_keep=1` (what `generate` runs at prefill) is timed, interleaved, medians compared.
Target: Vision-Zephyr's visual tokens are at most 1/10 of LLaVA-NeXT's for the same image.

    python benchmarks/bench_prefill.py --repeats 7
"""

import argparse
import functools

import torch
from tqdm import tqdm
from transformers import (
    AutoProcessor,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
)

from vision_zephyr_tools.benchmark_harness import (
    REPO_ROOT,
    add_image_sizes_argument,
    bench_config,
    interleaved_medians,
    load_repo_class,
    milliseconds,
    photo_like_image,
)


PROMPT = "<image>\nWhat is shown in this image?"
MODELS = ("Vision-Zephyr", "LLaVA-NeXT")


def build_models(config) -> dict[str, torch.nn.Module]:
    """Vision-Zephyr with random weights, and LLaVA-NeXT holding copies of its vision tower and language model."""
    torch.manual_seed(0)
    ours = load_repo_class("VisionZephyrForConditionalGeneration")(config).eval()
    llava_config = LlavaNextConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id,
        image_grid_pinpoints=config.image_grid_pinpoints,
    )
    llava = LlavaNextForConditionalGeneration(llava_config).eval()
    llava.model.vision_tower.load_state_dict(ours.model.vision_tower.state_dict())
    llava.model.language_model.load_state_dict(ours.model.language_model.state_dict())
    llava.lm_head.load_state_dict(ours.lm_head.state_dict())
    return dict(zip(MODELS, (ours, llava), strict=True))


def build_processors(config) -> dict:
    ours = AutoProcessor.from_pretrained(REPO_ROOT, trust_remote_code=True)
    llava_image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": config.tile_size},
        crop_size={"height": config.tile_size, "width": config.tile_size},
        image_grid_pinpoints=config.image_grid_pinpoints,
    )
    llava = LlavaNextProcessor(
        image_processor=llava_image_processor,
        tokenizer=ours.tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return dict(zip(MODELS, (ours, llava), strict=True))


def prefill(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    return {"ms": milliseconds(lambda: model(**inputs, logits_to_keep=1))}


def measure_image_size(models: dict, processors: dict, image_size: tuple[int, int], repeats: int) -> dict:
    image = photo_like_image(*image_size)
    inputs = {name: dict(processors[name](text=PROMPT, images=image, return_tensors="pt")) for name in MODELS}
    image_token_id = models["Vision-Zephyr"].config.image_token_id
    candidates = {name: functools.partial(prefill, models[name], inputs[name]) for name in MODELS}
    for measure in candidates.values():
        measure()  # warm-up
    medians = interleaved_medians(candidates, repeats, f"{image_size[0]}×{image_size[1]}")
    for name in MODELS:
        medians[name]["visual_tokens"] = int((inputs[name]["input_ids"] == image_token_id).sum())
        medians[name]["prompt_tokens"] = inputs[name]["input_ids"].shape[1]
    return medians


def print_table(results: dict, args: argparse.Namespace) -> None:
    print(
        f"prefill forward (logits_to_keep=1), medians of {args.repeats} interleaved runs, torch threads {args.threads}"
    )
    print(
        f"{'image':>10} | {'ours tokens':>11} | {'LLaVA-NeXT tokens':>17} | {'token ratio':>11} | "
        f"{'ours ms':>8} | {'LLaVA-NeXT ms':>13} | {'speed-up':>8}"
    )
    for (width, height), medians in results.items():
        ours, llava = medians["Vision-Zephyr"], medians["LLaVA-NeXT"]
        print(
            f"{width:>5}×{height:<4} | {ours['visual_tokens']:>11} | {llava['visual_tokens']:>17} | "
            f"{ours['visual_tokens'] / llava['visual_tokens']:>11.3f} | {ours['ms']:>8.1f} | {llava['ms']:>13.1f} | "
            f"{llava['ms'] / ours['ms']:>7.2f}×"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved prefill forwards per model and image")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    add_image_sizes_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = bench_config()
    models, processors = build_models(config), build_processors(config)
    with torch.inference_mode():
        results = {
            size: measure_image_size(models, processors, size, args.repeats)
            for size in tqdm(args.image_sizes, desc="image sizes")
        }
    print_table(results, args)


if __name__ == "__main__":
    main()
