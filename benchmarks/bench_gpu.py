"""The full 7B Vision-Zephyr on one GPU: time to first token, decode tokens/s, peak memory, % of the bandwidth limit.

The model is the repository's `config.json` (CLIP ViT-L/14-336, 8-block Q-Former, Mistral 7B) with random weights
built directly on the GPU in bfloat16: nothing is downloaded. Inputs come from the repository's processor: one
1920×1080 image and a 30-token question in the chat template (TTFT = preprocessing + prefill + first token, batch 1);
decode is timed at batch 1 and 8 as (time of `generate` with 1 + N new tokens − time with 1 new token) / N, the two
calls interleaved, medians used. Two settings: the default dynamic cache with SDPA, and `cache_implementation="static"`
with `generate`'s automatic `torch.compile` of the decode step. The bandwidth limit of decode is reading every
language-model weight once per step, so % of limit = LM weight bytes × decode steps/s ÷ GPU memory bandwidth (KV-cache
reads, a few tens of MB here, are left out).

    python benchmarks/bench_gpu.py                  # needs CUDA
    python benchmarks/bench_gpu.py --dry-run        # the same code path on CPU with the tests' tiny config
"""

import argparse
import functools
import statistics
import time

import torch
from tqdm import tqdm
from transformers import AutoConfig, AutoProcessor, CompileConfig

from vision_zephyr_tools.benchmark_harness import REPO_ROOT, load_repo_class, photo_like_image
from vision_zephyr_tools.conversion.make_tiny_checkpoint import tiny_config


# Peak memory bandwidth in GB/s, matched against `torch.cuda.get_device_name()` in this order.
DEVICE_BANDWIDTH_GBS = [("H200", 4800.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("A100", 2039.0)]
QUESTION = (
    "Describe in detail everything that is happening in this picture, including the people, the objects, the "
    "colours, the text on any signs, and what might happen next in the scene."
)
# Setting name -> whether it uses the static cache with `generate`'s automatic compilation of the decode step.
SETTINGS = {"sdpa-dynamic-cache": False, "static-cache-compile": True}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device (a CUDA GPU unless --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="the tests' tiny config, float32, on CPU")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), help="what to time")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="decode batch sizes")
    parser.add_argument("--new-tokens", type=int, default=64, help="decode steps timed after the first token")
    parser.add_argument("--question-tokens", type=int, default=30, help="length of the question in tokens")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing runs per measurement")
    parser.add_argument("--bandwidth-gbs", type=float, help="GPU memory bandwidth in GB/s (default: by device name)")
    args = parser.parse_args()
    if args.dry_run:
        args.device = "cpu"
    elif not (args.device.startswith("cuda") and torch.cuda.is_available()):
        parser.error(f"--device {args.device!r} needs a CUDA GPU (none is available here); use --dry-run on CPU.")
    return args


def device_bandwidth_gbs(device: torch.device, override: float | None) -> float | None:
    if override is not None or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name(device)
    return next((bandwidth for key, bandwidth in DEVICE_BANDWIDTH_GBS if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(dry_run: bool, device: torch.device) -> torch.nn.Module:
    """Random weights created on `device`: the 7B config in bfloat16, or the tests' tiny config in float32."""
    config = tiny_config() if dry_run else AutoConfig.from_pretrained(REPO_ROOT, trust_remote_code=True)
    dtype = torch.float32 if dry_run else torch.bfloat16
    model_class = load_repo_class("VisionZephyrForConditionalGeneration")
    with torch.device(device):
        model = model_class._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def question_of(processor, num_tokens: int) -> str:
    """`QUESTION` cut to its first `num_tokens` tokens."""
    token_ids = processor.tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    if len(token_ids) < num_tokens:
        raise ValueError(f"--question-tokens {num_tokens} is longer than the built-in question ({len(token_ids)}).")
    return processor.tokenizer.decode(token_ids[:num_tokens])


def build_inputs(processor, question: str, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """`batch_size` copies of one 1920×1080 image with the question, in the chat template, on `device`."""
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    image = photo_like_image(1920, 1080)
    inputs = processor(text=[text] * batch_size, images=[image] * batch_size, return_tensors="pt")
    return {key: value.to(device) for key, value in inputs.items()}


def generation_kwargs(setting: str, dry_run: bool) -> dict:
    """`generate` arguments of a setting; a dry run compiles with the cheap `eager` backend, allowed on CPU."""
    if not SETTINGS[setting]:
        return {}
    compile_config = CompileConfig()
    if dry_run:
        compile_config = CompileConfig(backend="eager", mode=None)
        compile_config._compile_all_devices = True
    return {"cache_implementation": "static", "compile_config": compile_config}


def timed_generate(model, inputs: dict, new_tokens: int, generation_kwargs: dict) -> float:
    """Seconds of one greedy `generate` producing exactly `new_tokens` tokens."""
    synchronize(model.device)
    start = time.perf_counter()
    model.generate(
        **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, **generation_kwargs
    )
    synchronize(model.device)
    return time.perf_counter() - start


def measure_ttft(model, processor, question: str, generation_kwargs: dict, repeats: int) -> dict[str, float]:
    """Median ms of preprocessing (processor + copy to the device) and of prefill + first token, batch 1."""
    preprocess, first_token = [], []
    timed_generate(model, build_inputs(processor, question, 1, model.device), 1, generation_kwargs)  # warm-up
    for _ in range(repeats):
        start = time.perf_counter()
        inputs = build_inputs(processor, question, 1, model.device)
        synchronize(model.device)
        preprocess.append(time.perf_counter() - start)
        first_token.append(timed_generate(model, inputs, 1, generation_kwargs))
    return {
        "preprocess_ms": 1000 * statistics.median(preprocess),
        "first_token_ms": 1000 * statistics.median(first_token),
    }


def measure_decode(model, inputs: dict, new_tokens: int, generation_kwargs: dict, repeats: int) -> float:
    """Median seconds per decode step: generate with 1 + `new_tokens` tokens minus generate with 1, interleaved."""
    short = functools.partial(timed_generate, model, inputs, 1, generation_kwargs)
    long = functools.partial(timed_generate, model, inputs, 1 + new_tokens, generation_kwargs)
    for _ in range(2):  # warm-up; with the static cache the decode step compiles, then again with dynamic shapes
        long()
    short_times, long_times = [], []
    for _ in range(repeats):
        short_times.append(short())
        long_times.append(long())
    return (statistics.median(long_times) - statistics.median(short_times)) / new_tokens


def language_model_bytes(model) -> int:
    """Bytes of the weights every decode step reads: the language model and its head."""
    modules = (model.model.language_model, model.lm_head)
    return sum(p.numel() * p.element_size() for module in modules for p in module.parameters())


def run_setting(model, processor, question: str, generation_kwargs: dict, args: argparse.Namespace) -> list[dict]:
    """TTFT at batch 1, then one row per batch size: decode tokens/s and the peak memory of that run."""
    rows = []
    ttft = measure_ttft(model, processor, question, generation_kwargs, args.repeats)
    for batch_size in args.batch_sizes:
        if model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(model.device)
        inputs = build_inputs(processor, question, batch_size, model.device)
        seconds_per_step = measure_decode(model, inputs, args.new_tokens, generation_kwargs, args.repeats)
        peak = torch.cuda.max_memory_allocated(model.device) if model.device.type == "cuda" else None
        rows.append({"batch": batch_size, "seconds_per_step": seconds_per_step, "peak_bytes": peak, **ttft})
    return rows


def print_table(results: dict[str, list[dict]], weight_bytes: int, bandwidth_gbs: float | None, args) -> None:
    if args.dry_run:
        print("dry run (tiny config on CPU): checks the code path; its numbers measure nothing")
    print(
        f"LM + head weights {weight_bytes / 1e9:.2f} GB, bandwidth {bandwidth_gbs or 'unknown'} GB/s, "
        f"{args.new_tokens} decode steps, medians of {args.repeats}"
    )
    print(
        f"{'setting':>28} | {'batch':>5} | {'preprocess ms':>13} | {'prefill+1st ms':>14} | {'TTFT ms':>8} | "
        f"{'tokens/s':>9} | {'ms/step':>7} | {'% BW limit':>10} | {'peak GiB':>8}"
    )
    for setting, rows in results.items():
        for row in rows:
            steps_per_s = 1 / row["seconds_per_step"]
            bandwidth_share = (
                f"{100 * weight_bytes * steps_per_s / (bandwidth_gbs * 1e9):.1f}" if bandwidth_gbs else "n/a"
            )
            peak = f"{row['peak_bytes'] / 2**30:.1f}" if row["peak_bytes"] is not None else "n/a"
            ttft = row["preprocess_ms"] + row["first_token_ms"]
            print(
                f"{setting:>28} | {row['batch']:>5} | {row['preprocess_ms']:>13.1f} | {row['first_token_ms']:>14.1f} | "
                f"{ttft:>8.1f} | {row['batch'] * steps_per_s:>9.1f} | {1000 * row['seconds_per_step']:>7.2f} | "
                f"{bandwidth_share:>10} | {peak:>8}"
            )


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    model = build_model(args.dry_run, device)
    processor = AutoProcessor.from_pretrained(REPO_ROOT, trust_remote_code=True)
    processor.num_query_tokens = model.model.visual_tokens_per_tile
    question = question_of(processor, args.question_tokens)
    # No `inference_mode` around `generate` (which runs under `no_grad`): the static cache must stay usable by the
    # compiled, CUDA-graphed decode step.
    results = {
        setting: run_setting(model, processor, question, generation_kwargs(setting, args.dry_run), args)
        for setting in tqdm(args.settings, desc="settings")
    }
    print_table(results, language_model_bytes(model), device_bandwidth_gbs(device, args.bandwidth_gbs), args)


if __name__ == "__main__":
    main()
