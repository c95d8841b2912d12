"""Shared fixtures: a tiny random checkpoint (built once per session, offline) and inputs made for it."""

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from vision_zephyr_tools.conversion.make_tiny_checkpoint import make_tiny_checkpoint
from vision_zephyr_tools.remote_code import REPO_ROOT, load_repo_class  # noqa: F401 (REPO_ROOT: for the tests)


IMAGE_TOKEN_ID = 32000


def load_script(path: Path) -> ModuleType:
    """A script outside the package (benchmarks/, research/), imported from its file under its own name."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A complete tiny checkpoint folder outside the repository (as a user would download it)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-vis-zephyr"))


@pytest.fixture(scope="session")
def tiny_mlp_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-vis-zephyr-mlp"), projector_type="mlp2x_gelu")


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint, for tests that write into it."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint"))


@pytest.fixture(scope="session")
def repo_class():
    """Imports a class of the root remote-code files the way `trust_remote_code` does."""
    return load_repo_class


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, trust_remote_code=True).eval()


def image_inputs(grids: list[tuple[int, int]], seed: int = 0, tile_size: int = 336) -> dict[str, torch.Tensor]:
    """Random tiles for images with the given `(rows, cols)` grids, padded on the tile axis like the processor."""
    generator = torch.Generator().manual_seed(seed)
    max_tiles = max(1 + rows * cols for rows, cols in grids)
    pixel_values = torch.zeros(len(grids), max_tiles, 3, tile_size, tile_size)
    for index, (rows, cols) in enumerate(grids):
        pixel_values[index, : 1 + rows * cols] = torch.randn(
            1 + rows * cols, 3, tile_size, tile_size, generator=generator
        )
    return {"pixel_values": pixel_values, "image_grids": torch.tensor(grids)}


def prompt_ids(text_length: int, visual_tokens: int, seed: int = 0) -> list[int]:
    """BOS, a few text tokens, the image placeholders, then the rest of the text."""
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(3, IMAGE_TOKEN_ID, (text_length,), generator=generator).tolist()
    head = min(3, text_length)
    return [1, *text[:head], *([IMAGE_TOKEN_ID] * visual_tokens), *text[head:]]


def left_pad(sequences: list[list[int]], pad_id: int = 2) -> dict[str, torch.Tensor]:
    longest = max(len(ids) for ids in sequences)
    input_ids = torch.tensor([[pad_id] * (longest - len(ids)) + ids for ids in sequences])
    attention_mask = torch.tensor([[0] * (longest - len(ids)) + [1] * len(ids) for ids in sequences])
    return {"input_ids": input_ids, "attention_mask": attention_mask}
