"""Offline `vllm.LLM` (CPU build, Transformers backend) gives `generate()`'s greedy tokens, text conditioning on."""

import gc

import pytest
from conftest import CASES, MAX_NEW_TOKENS

from vision_zephyr_tools.serving import client_request


@pytest.fixture(scope="module")
def llm(tiny_checkpoint):
    from vllm import LLM

    engine = LLM(
        model=str(tiny_checkpoint),
        trust_remote_code=True,
        model_impl="transformers",
        dtype="float32",
        max_model_len=2048,
        limit_mm_per_prompt={"image": 2},
        gpu_memory_utilization=0.15,  # on CPU: the share of RAM for the KV cache
    )
    yield engine
    del engine
    gc.collect()


def served(llm, processor) -> dict[str, tuple[list[int], list[int]]]:
    from vllm import SamplingParams

    requests = []
    for _, images, question in CASES:
        drawn, prompt = client_request(processor, images, question)
        requests.append(
            {
                # The rendered chat already starts with BOS: tokenized without special tokens, as vLLM's chat does.
                "prompt_token_ids": processor.tokenizer(prompt, add_special_tokens=False).input_ids,
                "multi_modal_data": {"image": drawn},
                "mm_processor_kwargs": {"qformer_text": prompt},
            }
        )
    outputs = llm.generate(requests, SamplingParams(temperature=0, max_tokens=MAX_NEW_TOKENS))
    return {
        name: (list(output.prompt_token_ids), list(output.outputs[0].token_ids))
        for (name, _, _), output in zip(CASES, outputs, strict=True)
    }


def test_batched_requests_get_generates_prompt_ids_and_tokens(llm, processor, expected):
    results = served(llm, processor)
    for name, (prompt, _) in results.items():
        assert prompt == expected[name]["prompt"], f"{name}: prompt ids differ"
    mismatched = [name for name, (_, answer) in results.items() if answer != expected[name]["answer"]]
    assert not mismatched, f"vLLM's tokens differ from generate()'s for {mismatched}"


def test_a_second_round_served_from_vllms_caches_still_gets_generates_tokens(llm, processor, expected):
    """The processor, encoder and prefix caches now hold every image; the same image asked another question (or
    under another prompt) must not reuse the first one's features."""
    results = served(llm, processor)
    mismatched = [name for name, (_, answer) in results.items() if answer != expected[name]["answer"]]
    assert not mismatched, f"cached round: tokens differ for {mismatched}"
