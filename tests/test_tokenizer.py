"""The Zephyr tokenizer shipped at the root: the original's ids, exactly, with `<image>` as id 32000."""

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer


REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ORIGINAL_PROMPTS = json.loads((FIXTURES / "original" / "prompts.json").read_text(encoding="utf-8"))
SENTENCEPIECE_CASES = json.loads((FIXTURES / "sentencepiece_ids.json").read_text(encoding="utf-8"))["cases"]
IMAGE_TOKEN_ID = 32000
ORIGINAL_IMAGE_INDEX = -200
# offline-assets.md: Zephyr's ids for this string, which a non-legacy Metaspace gets wrong after `</s>`.
PINNED_TEXT = "<|user|>\nHello</s>"
PINNED_IDS = [1, 523, 28766, 1838, 28766, 28767, 13, 16230, 2]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(REPO_ROOT, trust_remote_code=True)


def test_pinned_ids_survive_two_save_and_reload_rounds(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "first")
    AutoTokenizer.from_pretrained(tmp_path / "first").save_pretrained(tmp_path / "second")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "second")
    for name, candidate in [("shipped", tokenizer), ("reloaded twice", reloaded)]:
        ids = candidate(PINNED_TEXT).input_ids
        assert ids == PINNED_IDS, f"{name} tokenizer encodes {PINNED_TEXT!r} as {ids}, expected {PINNED_IDS}"


def test_image_token_is_special_id_32000(tokenizer):
    assert tokenizer.convert_tokens_to_ids("<image>") == IMAGE_TOKEN_ID
    assert len(tokenizer) == IMAGE_TOKEN_ID + 1, f"vocabulary has {len(tokenizer)} entries, expected 32001"
    assert tokenizer("a<image>b", add_special_tokens=False).input_ids.count(IMAGE_TOKEN_ID) == 1
    assert "<image>" in tokenizer.all_special_tokens


def test_adds_bos_and_pads_with_eos_on_the_left(tokenizer):
    batch = tokenizer(["Hi", "A longer text"], padding=True)
    short, padding = batch.input_ids[0], batch.attention_mask[0].count(0)
    assert padding > 0 and short[:padding] == [2] * padding, f"expected left padding with </s> (2), got {short}"
    assert short[padding] == 1 and batch.input_ids[1][0] == 1, "BOS (id 1) must start every sequence"


@pytest.mark.parametrize("case", ORIGINAL_PROMPTS["cases"], ids=lambda case: case["messages"][-1]["content"][:24])
def test_one_pass_over_the_original_prompt_gives_the_original_chunkwise_ids(tokenizer, case):
    expected = [IMAGE_TOKEN_ID if token == ORIGINAL_IMAGE_INDEX else token for token in case["input_ids"]]
    ids = tokenizer(case["prompt"]).input_ids
    assert ids == expected, f"first difference at position {first_difference(ids, expected)}"


def test_runs_of_whitespace_tokenize_exactly_like_sentencepiece(tokenizer):
    mismatches = [
        case["text"]
        for case in SENTENCEPIECE_CASES
        if tokenizer(case["text"], add_special_tokens=False).input_ids != case["input_ids"]
    ]
    assert not mismatches, (
        f"{len(mismatches)} of {len(SENTENCEPIECE_CASES)} differ from sentencepiece: {mismatches[:3]}"
    )


@pytest.mark.skipif(
    not (importlib.util.find_spec("sentencepiece") and importlib.util.find_spec("mistral_common")),
    reason="needs sentencepiece and mistral-common (the real tokenizer.model)",
)
def test_random_text_tokenizes_exactly_like_live_sentencepiece(tokenizer):
    import sentencepiece

    from vision_zephyr_tools.conversion.build_tokenizer import default_sentencepiece_model

    reference = sentencepiece.SentencePieceProcessor(model_file=str(default_sentencepiece_model()))
    rng = random.Random(0)
    alphabet = list("abcdefghijXYZ0123456789.,;:!?'\"()-_/ \t\n") + ["é", "日", "😀", "—", "\u00a0", "▁", "  ", "   "]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(300)]
    mismatches = [
        text for text in texts if tokenizer(text, add_special_tokens=False).input_ids != reference.encode(text)
    ]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ from sentencepiece: {mismatches[:3]}"


@pytest.mark.skipif(
    not (importlib.util.find_spec("sentencepiece") and importlib.util.find_spec("mistral_common")),
    reason="needs sentencepiece and mistral-common (the real tokenizer.model)",
)
def test_build_script_regenerates_the_shipped_files(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "vision_zephyr_tools.conversion.build_tokenizer", "--output-dir", str(tmp_path)],
        check=True,
    )
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        assert (tmp_path / name).read_bytes() == (REPO_ROOT / name).read_bytes(), (
            f"{name} differs from the shipped one"
        )


def first_difference(ids: list[int], expected: list[int]) -> int:
    return next(
        (i for i, (a, b) in enumerate(zip(ids, expected, strict=False)) if a != b), min(len(ids), len(expected))
    )
