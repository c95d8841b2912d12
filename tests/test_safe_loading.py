"""Safe loading: weights from safetensors only, no code run from pickles or strings, no network needed."""

import ast
import pickle
import shutil
import socket
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor


REPO_CODE = sorted(
    [
        *REPO_ROOT.glob("*.py"),
        *(REPO_ROOT / "vision_zephyr_tools").rglob("*.py"),
        *(REPO_ROOT / "research").glob("*.py"),
    ]
)
# Calls that run code from data: strings as code, or unpicklers that can import and call anything.
CODE_FROM_DATA_BUILTINS = {"eval", "exec", "compile", "__import__"}
CODE_FROM_DATA_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("marshal", "load"),
    ("marshal", "loads"),
    ("dill", "load"),
    ("dill", "loads"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
}


class RunsCodeWhenUnpickled:
    """A 'weight' whose unpickling calls `open(marker, "w")`: stands for any code a malicious checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture
def pickle_only_checkpoint(tiny_checkpoint, tmp_path) -> tuple[Path, Path]:
    """The tiny checkpoint with its safetensors replaced by a malicious `pytorch_model.bin`, and the marker path."""
    folder = Path(
        shutil.copytree(tiny_checkpoint, tmp_path / "pickled", ignore=shutil.ignore_patterns("*.safetensors"))
    )
    marker = tmp_path / "code-from-the-pickle-ran"
    torch.save({"lm_head.weight": RunsCodeWhenUnpickled(marker)}, folder / "pytorch_model.bin")
    return folder, marker


@pytest.mark.parametrize("auto_class", [AutoModelForImageTextToText, AutoModel], ids=lambda cls: cls.__name__)
def test_model_classes_do_not_fall_back_to_a_pickled_bin(pickle_only_checkpoint, auto_class):
    folder, marker = pickle_only_checkpoint
    with pytest.raises(OSError, match="model.safetensors"):
        auto_class.from_pretrained(folder, trust_remote_code=True)
    assert not marker.exists(), "loading ran code from the pickle"


def test_a_bin_allowed_explicitly_is_read_with_weights_only(pickle_only_checkpoint):
    folder, marker = pickle_only_checkpoint
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, use_safetensors=False)
    assert not marker.exists(), "loading ran code from the pickle"


def code_from_data_calls(source: str) -> list[str]:
    """`eval`/`exec`-like calls, unpickling, and `torch.load` without `weights_only=True`, with their lines."""
    findings = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in {"pickle", "marshal", "dill"}:
            names = {alias.name for alias in node.names} & {"load", "loads", "Unpickler"}
            findings += [f"line {node.lineno}: from {node.module} import {name}" for name in sorted(names)]
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Name) and function.id in CODE_FROM_DATA_BUILTINS:
            findings.append(f"line {node.lineno}: {function.id}()")
        elif isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
            call = (function.value.id, function.attr)
            weights_only = any(
                keyword.arg == "weights_only"
                and isinstance(keyword.value, ast.Constant)
                and keyword.value.value is True
                for keyword in node.keywords
            )
            if call in CODE_FROM_DATA_CALLS or (call == ("torch", "load") and not weights_only):
                findings.append(f"line {node.lineno}: {'.'.join(call)}()")
    return findings


@pytest.mark.parametrize("path", REPO_CODE, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_repository_code_never_runs_code_from_data(path):
    findings = code_from_data_calls(path.read_text())
    assert not findings, f"{path.name} may run code from user data: {findings}"


@pytest.mark.parametrize(
    "snippet",
    [
        "eval(text)",
        "exec(code)",
        "pickle.loads(blob)",
        "from pickle import load",
        "torch.load(path)",
        "torch.load(path, weights_only=False)",
        "yaml.load(stream)",
    ],
)
def test_the_scan_flags_code_from_data(snippet):
    assert code_from_data_calls(snippet), f"the scan missed {snippet!r}"


def test_the_scan_accepts_weights_only_torch_load():
    assert not code_from_data_calls("torch.load(path, map_location='cpu', weights_only=True)")


@pytest.fixture
def network_attempts(monkeypatch) -> list:
    """Every connection or DNS lookup is recorded and refused, so that a silent fallback cannot hide it."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_loading_the_code_and_running_the_model_needs_no_network(tiny_checkpoint, tmp_path, network_attempts):
    # A folder name of its own, so that the remote-code modules are imported here and not taken from sys.modules.
    folder = shutil.copytree(tiny_checkpoint, tmp_path / "offline-vis-zephyr")
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    inputs = processor(text="<image>\nWhat is it?", images=Image.new("RGB", (64, 48)), return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    assert not network_attempts, f"tried to reach the network: {network_attempts}"
