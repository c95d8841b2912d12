"""Decode overhead: tokens/s of Vision-Zephyr's `generate` after prefill against a bare `MistralForCausalLM`.

The bare model is built from the identical `text_config` and holds a copy of Vision-Zephyr's language-model and head
weights; both get the same `input_ids` (a chat prompt with one 640×480 image, whose `<image>` placeholders the bare
model reads as ordinary tokens), greedy decoding, a fixed number of new tokens. A logits processor timestamps every
step, so prefill (the first step; for Vision-Zephyr it includes the vision tower and the Q-Former) and decode (every
later step) are timed separately inside one `generate` call. The two models run interleaved, medians are compared.
Target: Vision-Zephyr's decode is at most 1.05× slower.

    python benchmarks/bench_decode.py --repeats 15
"""

import argparse
import functools
import time

import torch
from transformers import AutoProcessor, LogitsProcessor, LogitsProcessorList, MistralForCausalLM

from vision_zephyr_tools.benchmark_harness import (
    REPO_ROOT,
    bench_config,
    interleaved_medians,
    load_repo_class,
    photo_like_image,
)


LANGUAGE_INPUTS = ("input_ids", "attention_mask")


class StepClock(LogitsProcessor):
    """Timestamps every call: one per generated token, the first right after the prefill forward."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.times.append(time.perf_counter())
        return scores


def build_models(config) -> dict[str, torch.nn.Module]:
    """Vision-Zephyr with random weights, and a bare Mistral holding copies of its language model and head."""
    torch.manual_seed(0)
    ours = load_repo_class("VisionZephyrForConditionalGeneration")(config).eval()
    bare = MistralForCausalLM(config.text_config).eval()
    bare.model.load_state_dict(ours.model.language_model.state_dict())
    bare.lm_head.load_state_dict(ours.lm_head.state_dict())
    return {"Vision-Zephyr": ours, "MistralForCausalLM": bare}


def image_prompt(image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    processor = AutoProcessor.from_pretrained(REPO_ROOT, trust_remote_code=True)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown here?"}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    return dict(processor(text=text, images=photo_like_image(*image_size), return_tensors="pt"))


def check_same_language_model(models: dict[str, torch.nn.Module], input_ids: torch.LongTensor) -> None:
    """The copied weights must make both models generate the same text-only continuation."""
    text_ids = input_ids[:, input_ids[0] != models["Vision-Zephyr"].config.image_token_id]
    continuations = [model.generate(text_ids, max_new_tokens=8, do_sample=False) for model in models.values()]
    if not torch.equal(*continuations):
        raise RuntimeError(f"The bare Mistral does not reproduce Vision-Zephyr's language model: {continuations}.")


def timed_generate(model: torch.nn.Module, inputs: dict[str, torch.Tensor], new_tokens: int) -> dict[str, float]:
    """Prefill ms and decode tokens/s of one greedy `generate` call producing exactly `new_tokens` + 1 tokens."""
    clock = StepClock()
    start = time.perf_counter()
    model.generate(
        **inputs,
        max_new_tokens=new_tokens + 1,
        min_new_tokens=new_tokens + 1,
        do_sample=False,
        logits_processor=LogitsProcessorList([clock]),
    )
    return {
        "prefill_ms": 1000 * (clock.times[0] - start),
        "decode_tokens_per_s": new_tokens / (clock.times[-1] - clock.times[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved generate calls per model")
    parser.add_argument("--new-tokens", type=int, default=64, help="decode steps timed after the first token")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    inputs = image_prompt((640, 480))
    models = build_models(bench_config())
    check_same_language_model(models, inputs["input_ids"])
    model_inputs = {"Vision-Zephyr": inputs, "MistralForCausalLM": {key: inputs[key] for key in LANGUAGE_INPUTS}}
    with torch.inference_mode():
        candidates = {
            name: functools.partial(timed_generate, model, model_inputs[name], args.new_tokens)
            for name, model in models.items()
        }
        for measure in candidates.values():
            measure()  # warm-up
        medians = interleaved_medians(candidates, args.repeats, "interleaved generate calls")
    print_table(medians, prompt_length=inputs["input_ids"].shape[1], args=args)


def print_table(medians: dict[str, dict[str, float]], prompt_length: int, args: argparse.Namespace) -> None:
    print(
        f"prompt {prompt_length} tokens (one 640×480 image), greedy, {args.new_tokens} decode steps timed, "
        f"medians of {args.repeats} interleaved runs, torch threads {args.threads}"
    )
    print(f"{'model':>20} | {'prefill ms':>10} | {'decode tokens/s':>15} | {'ms/token':>8}")
    for name, metrics in medians.items():
        tokens_per_s = metrics["decode_tokens_per_s"]
        print(f"{name:>20} | {metrics['prefill_ms']:>10.1f} | {tokens_per_s:>15.1f} | {1000 / tokens_per_s:>8.2f}")
    ratio = medians["MistralForCausalLM"]["decode_tokens_per_s"] / medians["Vision-Zephyr"]["decode_tokens_per_s"]
    print(f"decode time ratio Vision-Zephyr / bare Mistral: {ratio:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
