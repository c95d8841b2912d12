"""The Python blocks of README.md and docs/ecosystem.md run, in order, against the tiny checkpoint: docs cannot rot.

The only edits made before running: the checkpoint placeholder (`repo = "..."`) becomes the tiny checkpoint folder,
`photo.jpg` is a picture written into the working directory (which also links the clone's `demo/` and `examples/`, as
a clone's root has them), and `max_new_tokens` is capped (the random tiny model
never says `</s>`, and its words are noise anyway).
"""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", "docs/ecosystem.md"]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
REPO_PLACEHOLDER = re.compile(r'^repo = "path/or/hub-id-of-a-converted-checkpoint"', re.MULTILINE)
MAX_NEW_TOKENS = re.compile(r"max_new_tokens=\d+")


def python_blocks(document: str) -> list[str]:
    return PYTHON_BLOCK.findall((REPO_ROOT / document).read_text())


@pytest.fixture
def in_folder_with_photo(tmp_path, monkeypatch):
    picture = np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "photo.jpg")
    for name in ("demo", "examples"):
        (tmp_path / name).symlink_to(REPO_ROOT / name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_document_has_python_examples_that_name_the_checkpoint_placeholder(document):
    blocks = python_blocks(document)
    assert blocks, f"{document} has no ```python blocks left to test"
    assert REPO_PLACEHOLDER.search(blocks[0]), f"the first block of {document} must set the `repo = ...` placeholder"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_python_blocks_run_against_the_tiny_checkpoint(document, tiny_checkpoint, in_folder_with_photo):
    namespace = {"__name__": f"snippets_of_{Path(document).stem}"}
    for index, block in enumerate(python_blocks(document)):
        code = REPO_PLACEHOLDER.sub(f"repo = {str(tiny_checkpoint)!r}", block)
        code = MAX_NEW_TOKENS.sub("max_new_tokens=8", code)
        exec(compile(code, f"{document} python block {index + 1}", "exec"), namespace)  # noqa: S102
