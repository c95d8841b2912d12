"""`from_pretrained` options users combine: offloading device maps, `low_cpu_mem_usage`, `dtype`, shards, meta init."""

import re
from pathlib import Path

import pytest
import torch
from accelerate import infer_auto_device_map, init_empty_weights
from conftest import image_inputs, prompt_ids
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForImageTextToText


REPO_ROOT = Path(__file__).resolve().parent.parent
# The full model's parameter count (README "Inputs the model takes"): CLIP + Q-Former + Mistral + LM head.
FULL_MODEL_PARAMETERS = 9_223_675_904
# With no accelerator, `device_map="auto"` can only place modules on "cpu" and "disk". The tiny model is 18 MB in
# float32; 12 MB of "cpu" memory leaves the language model and its head to the offload folder.
SMALL_CPU_BUDGET = {"cpu": "12MB"}


def load(checkpoint, **kwargs):
    return AutoModelForImageTextToText.from_pretrained(checkpoint, trust_remote_code=True, **kwargs).eval()


@pytest.fixture(scope="module")
def image_batch() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.tensor([prompt_ids(6, 96)]), **image_inputs([(1, 2)])}


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def offloaded_model(tiny_checkpoint, tmp_path_factory):
    return load(
        tiny_checkpoint,
        device_map="auto",
        max_memory=SMALL_CPU_BUDGET,
        offload_folder=str(tmp_path_factory.mktemp("offload")),
    )


def test_device_map_auto_offloads_what_does_not_fit_to_disk(offloaded_model):
    placements = offloaded_model.hf_device_map
    assert "disk" in placements.values() and "cpu" in placements.values(), f"expected a split, got {placements}"
    assert not any(name.startswith("model.multi_modal_projector.layers.0.") for name in placements), (
        "a Q-Former layer (in `_no_split_modules`) must be placed whole"
    )


def test_disk_offloaded_model_gives_the_same_logits(offloaded_model, tiny_model, image_batch):
    assert torch.equal(logits(offloaded_model, image_batch), logits(tiny_model, image_batch))


def test_disk_offloaded_model_generates_the_same_tokens(offloaded_model, tiny_model, image_batch):
    expected = tiny_model.generate(**image_batch, max_new_tokens=3)
    assert torch.equal(offloaded_model.generate(**image_batch, max_new_tokens=3), expected)


def test_low_cpu_mem_usage_loads_the_same_weights(tiny_checkpoint, tiny_model):
    model = load(tiny_checkpoint, low_cpu_mem_usage=True)
    expected = tiny_model.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in model.state_dict().items())


def test_dtype_auto_keeps_the_dtype_the_checkpoint_was_saved_in(tiny_checkpoint, tmp_path):
    load(tiny_checkpoint, dtype=torch.bfloat16).save_pretrained(tmp_path)
    model = load(tmp_path, dtype="auto")
    assert model.dtype == torch.bfloat16
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}


def test_sharded_save_reloads_identically(tiny_model, image_batch, tmp_path):
    tiny_model.save_pretrained(tmp_path, max_shard_size="4MB")
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").exists(), "expected several shards"
    saved = {name: tensor for shard in shards for name, tensor in load_file(shard).items()}
    assert saved.keys() == tiny_model.state_dict().keys()
    assert torch.equal(logits(load(tmp_path), image_batch), logits(tiny_model, image_batch))


@pytest.fixture(scope="module")
def full_config():
    return AutoConfig.from_pretrained(REPO_ROOT, trust_remote_code=True)


@pytest.fixture(scope="module")
def meta_full_model(full_config):
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(full_config, trust_remote_code=True)


def test_full_model_builds_on_the_meta_device(meta_full_model):
    assert {parameter.device.type for parameter in meta_full_model.parameters()} == {"meta"}
    assert meta_full_model.num_parameters() == FULL_MODEL_PARAMETERS
    assert meta_full_model.dtype == torch.bfloat16, "from_config follows config.json's dtype"


def test_a_many_gpu_device_map_of_the_full_model_keeps_every_qformer_layer_whole(meta_full_model):
    # What `device_map="auto"` computes for 24 GPUs of 1 GiB: the 3.4 GB Q-Former must spread over several of them.
    budgets = {**dict.fromkeys(range(24), "1GiB"), "cpu": "100GiB"}
    device_map = infer_auto_device_map(
        meta_full_model, max_memory=budgets, no_split_module_classes=meta_full_model._no_split_modules
    )
    qformer_entries = [name for name in device_map if name.startswith("model.multi_modal_projector.layers.")]
    assert len({device_map[name] for name in qformer_entries}) > 1, f"expected a spread, got {device_map}"
    split = [name for name in qformer_entries if not re.fullmatch(r"model\.multi_modal_projector\.layers\.\d+", name)]
    assert not split, f"Q-Former layers split across devices: {split}"


def test_full_model_builds_under_accelerate_init_empty_weights(full_config):
    with init_empty_weights():
        model = AutoModelForImageTextToText.from_config(full_config, trust_remote_code=True)
    assert {parameter.device.type for parameter in model.parameters()} == {"meta"}
    assert model.num_parameters() == FULL_MODEL_PARAMETERS


def test_a_model_offloaded_entirely_to_disk_generates_the_same_tokens(
    tiny_checkpoint, tiny_model, image_batch, tmp_path
):
    on_disk = load(tiny_checkpoint, device_map={"": "disk"}, offload_folder=str(tmp_path / "offload"))
    assert on_disk.hf_device_map == {"": "disk"}
    expected = tiny_model.generate(**image_batch, max_new_tokens=3)
    assert torch.equal(on_disk.generate(**image_batch, max_new_tokens=3), expected)
