"""Determinism on CPU: greedy generation is bit-identical across runs and across positions in a left-padded batch.

One measured exception: PyTorch's CPU SDPA kernel (the default attention) gives a single decoding query with a padding
mask last-bit differences (~1e-7) depending on the row's position in the batch. The generated tokens are still the
same; with eager attention in the language model the scores are bit-identical too.
"""

import pytest
import torch
from conftest import image_inputs, left_pad, prompt_ids
from transformers import AutoModelForImageTextToText


GREEDY = {
    "max_new_tokens": 3,
    "do_sample": False,
    "pad_token_id": 2,
    "return_dict_in_generate": True,
    "output_scores": True,
}
QUERIES = 32


def sample(grid: tuple[int, int] | None, text_length: int, seed: int) -> dict:
    """One prompt with its image (ids, the image's own tiles and its grid), or a text-only prompt when `grid` is None."""
    if grid is None:
        return {"ids": prompt_ids(text_length, 0, seed), "tiles": None, "grid": None}
    rows, cols = grid
    tiles = image_inputs([grid], seed)["pixel_values"][0]
    return {"ids": prompt_ids(text_length, QUERIES * (1 + rows * cols), seed), "tiles": tiles, "grid": grid}


SHORT = sample((1, 2), text_length=4, seed=0)  # 101 tokens with its image: left-padded in a batch with LONG
LONG = sample(None, text_length=110, seed=1)  # text only, so that the batch runs the vision tower on one image


def batch_of(samples: list[dict]) -> dict[str, torch.Tensor]:
    """A left-padded batch with the tiles of the samples that have an image, in sample order."""
    with_image = [entry for entry in samples if entry["tiles"] is not None]
    return {
        **left_pad([entry["ids"] for entry in samples]),
        "pixel_values": torch.stack([entry["tiles"] for entry in with_image]),
        "image_grids": torch.tensor([entry["grid"] for entry in with_image]),
    }


def generated_row(output, row: int) -> tuple[list[int], list[torch.Tensor]]:
    """New tokens and per-step scores of one row of a `generate` output."""
    new_tokens = output.sequences[row, -GREEDY["max_new_tokens"] :].tolist()
    return new_tokens, [step[row] for step in output.scores]


def assert_bit_identical(first, second, what: str) -> None:
    first_tokens, first_scores = first
    second_tokens, second_scores = second
    assert first_tokens == second_tokens, f"{what}: generated {first_tokens} vs {second_tokens}"
    for step, (a, b) in enumerate(zip(first_scores, second_scores, strict=True)):
        difference = (a - b).abs().max().item()
        assert torch.equal(a, b), f"{what}: scores of step {step} differ by up to {difference}"


def generate_in_both_orders(model) -> dict:
    """Greedy outputs of the same two samples batched as [SHORT, LONG] and as [LONG, SHORT]."""
    return {
        "short first": model.generate(**batch_of([SHORT, LONG]), **GREEDY),
        "short last": model.generate(**batch_of([LONG, SHORT]), **GREEDY),
    }


@pytest.fixture(scope="module")
def sdpa_orders(tiny_model) -> dict:
    return generate_in_both_orders(tiny_model)


@pytest.fixture(scope="module")
def eager_orders(tiny_checkpoint) -> dict:
    # Eager for the language model only: the row-position effect is in its decoding attention.
    attention = {"": "sdpa", "vision_config": "sdpa", "text_config": "eager"}
    model = AutoModelForImageTextToText.from_pretrained(
        tiny_checkpoint, trust_remote_code=True, attn_implementation=attention
    ).eval()
    assert model.model.language_model.config._attn_implementation == "eager"
    return generate_in_both_orders(model)


SAMPLE_ROWS = [("padded image", 0, 1), ("unpadded text-only", 1, 0)]  # row in [SHORT, LONG], row in [LONG, SHORT]


@pytest.mark.parametrize(("which", "row_when_first", "row_when_last"), SAMPLE_ROWS)
def test_eager_attention_gives_bit_identical_output_first_or_last_in_the_batch(
    eager_orders, which, row_when_first, row_when_last
):
    assert_bit_identical(
        generated_row(eager_orders["short first"], row_when_first),
        generated_row(eager_orders["short last"], row_when_last),
        f"the {which} sample, first vs last in the batch",
    )


@pytest.mark.parametrize(("which", "row_when_first", "row_when_last"), SAMPLE_ROWS)
def test_default_attention_gives_the_same_tokens_first_or_last_in_the_batch(
    sdpa_orders, which, row_when_first, row_when_last
):
    first_tokens, first_scores = generated_row(sdpa_orders["short first"], row_when_first)
    last_tokens, last_scores = generated_row(sdpa_orders["short last"], row_when_last)
    assert first_tokens == last_tokens, f"the {which} sample generated {first_tokens} first, {last_tokens} last"
    assert torch.equal(first_scores[0], last_scores[0]), "the prefill step must be bit-identical"
    for first, last in zip(first_scores, last_scores, strict=True):
        torch.testing.assert_close(first, last, rtol=0, atol=1e-6)


def test_greedy_generation_is_bit_identical_across_runs(tiny_model, sdpa_orders):
    first, second = sdpa_orders["short first"], tiny_model.generate(**batch_of([SHORT, LONG]), **GREEDY)
    assert torch.equal(first.sequences, second.sequences), "two greedy runs generated different tokens"
    for row in range(2):
        assert_bit_identical(generated_row(first, row), generated_row(second, row), f"row {row}, two runs")
