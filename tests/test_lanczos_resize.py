"""Our LANCZOS equals Pillow 11.2.1's (the original's) on 1,210 (size, target) pairs, under any installed Pillow."""

import hashlib
import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image
from transformers.dynamic_module_utils import get_class_from_dynamic_module


FIXTURES = REPO_ROOT / "tests" / "fixtures"
REFERENCE = json.loads((FIXTURES / "pil11_resize" / "cases.json").read_text())


def load_reference_script():
    spec = importlib.util.spec_from_file_location(
        "make_pil11_resize_reference", FIXTURES / "make_pil11_resize_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference_image = load_reference_script().reference_image


def repo_function(name: str):
    return get_class_from_dynamic_module(f"image_processing_anyres.{name}", str(REPO_ROOT))


def sha256(levels: torch.Tensor) -> str:
    return hashlib.sha256(levels.to(torch.uint8).contiguous().numpy().tobytes()).hexdigest()


def test_reference_was_made_by_the_originals_pillow_and_covers_enough_pairs():
    cases = REFERENCE["cases"]
    assert REFERENCE["pillow"] == "11.2.1"
    assert len(cases) >= 1000
    squashes = [
        case for case in cases if case["size"][0] - case["target"][0] > 2 * (case["size"][1] - case["target"][1])
    ]
    upscales = [case for case in cases if case["target"][0] > case["size"][0] and case["target"][1] > case["size"][1]]
    assert len(squashes) >= 200 and len(upscales) >= 200, (len(squashes), len(upscales))


def test_lanczos_resize_equals_pillow_11_2_1_bit_for_bit():
    lanczos_resize = repo_function("lanczos_resize")
    wrong = []
    for case in REFERENCE["cases"]:
        pixels = torch.from_numpy(reference_image(*case["size"], case["seed"]))
        (resized,) = lanczos_resize(pixels, [tuple(case["target"])])
        if tuple(resized.shape[:2]) != tuple(case["target"]) or sha256(resized) != case["sha256"]:
            wrong.append(f"{case['size']} -> {case['target']}")
    assert not wrong, f"{len(wrong)} of {len(REFERENCE['cases'])} resizes differ from Pillow 11.2.1: {wrong[:10]}"


def test_resizes_of_one_image_share_the_reading_but_not_the_result():
    lanczos_resize = repo_function("lanczos_resize")
    pixels = torch.from_numpy(reference_image(300, 500, 1))
    together = lanczos_resize(pixels, [(336, 336), (201, 336), (300, 70)])
    alone = [lanczos_resize(pixels, [size])[0] for size in [(336, 336), (201, 336), (300, 70)]]
    assert all(torch.equal(a, b) for a, b in zip(together, alone, strict=True))


def test_levels_are_uint8_whichever_passes_run():
    # The normaliser looks 8-bit levels up in its table, also when a pass is skipped because its size does not change.
    lanczos_resize = repo_function("lanczos_resize")
    pixels = torch.from_numpy(reference_image(40, 60, 2))
    for size in [(40, 30), (20, 60), (20, 30), (40, 60)]:
        (resized,) = lanczos_resize(pixels, [size])
        assert resized.dtype == torch.uint8 and tuple(resized.shape) == (*size, 3), size


def test_plans_are_computed_once_per_size():
    axis_plan = repo_function("axis_plan")
    lanczos_resize = repo_function("lanczos_resize")
    pixels = torch.from_numpy(reference_image(123, 457, 0))
    lanczos_resize(pixels, [(45, 67)])
    misses = axis_plan.cache_info().misses
    lanczos_resize(pixels, [(45, 67)])
    assert axis_plan.cache_info().misses == misses, "a second image of the same size recomputed its weights"


def test_processor_does_not_use_pils_resize(monkeypatch):
    processor = repo_function("VisionZephyrImageProcessor")()
    image = Image.fromarray(reference_image(480, 640, 0), "RGB")
    expected = processor(image).pixel_values

    def no_resize(*args, **kwargs):
        raise AssertionError("the processor called PIL's Image.resize")

    monkeypatch.setattr(Image.Image, "resize", no_resize)
    fresh = repo_function("VisionZephyrImageProcessor")()
    assert np.array_equal(fresh(image).pixel_values, expected)


def test_device_argument_tiles_there_with_the_same_values():
    processor = repo_function("VisionZephyrImageProcessor")()
    image = Image.fromarray(reference_image(300, 500, 1), "RGB")
    expected = processor(image, return_tensors="pt").pixel_values
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        output = processor(image, device=device, return_tensors="pt").pixel_values
        assert output.device.type == device
        assert torch.equal(output.cpu(), expected), f"tiles on {device} differ from the CPU's"
    assert isinstance(processor(image, device="cpu").pixel_values, np.ndarray), "without return_tensors: numpy"


def test_unknown_device_is_a_value_error_naming_the_argument():
    processor = repo_function("VisionZephyrImageProcessor")()
    with pytest.raises(ValueError, match="device: expected a torch device"):
        processor(Image.new("RGB", (8, 8)), device="gpu0")


def test_other_resampling_filters_are_rejected():
    processor = repo_function("VisionZephyrImageProcessor")()
    with pytest.raises(ValueError, match="resample: only LANCZOS"):
        processor(Image.new("RGB", (8, 8)), resample=Image.Resampling.BICUBIC)
