"""The benchmark scripts run end to end in a quick mode (tiny models, small images, one repeat); nothing is timed."""

import sys

import pytest
import torch
from conftest import REPO_ROOT, load_script

from vision_zephyr_tools.conversion.make_tiny_checkpoint import tiny_config


bench_decode, bench_gpu, bench_prefill, bench_processor = (
    load_script(REPO_ROOT / "benchmarks" / f"{name}.py")
    for name in ("bench_decode", "bench_gpu", "bench_prefill", "bench_processor")
)


def run_script(module, monkeypatch, capsys, *arguments: str) -> str:
    monkeypatch.setattr(sys, "argv", [module.__file__, *arguments])
    module.main()
    return capsys.readouterr().out


def test_processor_benchmark_prints_every_thread_count_image_and_batch_size(monkeypatch, capsys):
    arguments = ["--repeats", "1", "--batch-sizes", "1", "2", "--image-sizes", "64x48", "--threads", "2", "1"]
    output = run_script(bench_processor, monkeypatch, capsys, *arguments)
    rows = [line for line in output.splitlines() if "64×48" in line]
    assert len(rows) == 4, f"expected one row per thread count and batch size, got:\n{output}"


def test_processor_benchmark_with_new_sizes_gives_every_call_a_new_size_and_all_processors_the_same(
    monkeypatch, capsys
):
    sizes = {name: [] for name in ("ours (exact)", "ours (fast_resize)", "LlavaNextImageProcessorPil")}

    def recorder(name):
        return lambda images: sizes[name].extend(image.size for image in images)

    monkeypatch.setattr(bench_processor, "processors", lambda: {name: recorder(name) for name in sizes})
    arguments = ["--repeats", "3", "--batch-sizes", "2", "--image-sizes", "64x48", "--threads", "1"]
    output = run_script(bench_processor, monkeypatch, capsys, *arguments, "--new-size-every-call")
    assert "a new image size every call" in output
    expected = [size for grow in range(4) for size in [(64 + grow, 48 + grow)] * 2]  # warm-up, then 3 timed calls
    assert sizes == dict.fromkeys(sizes, expected)


def test_decode_benchmark_compares_with_the_bare_mistral(monkeypatch, capsys):
    monkeypatch.setattr(bench_decode, "bench_config", tiny_config)
    output = run_script(bench_decode, monkeypatch, capsys, "--repeats", "1", "--new-tokens", "2")
    assert "MistralForCausalLM" in output and "decode time ratio" in output, output


def test_prefill_benchmark_counts_visual_tokens_of_both_models(monkeypatch, capsys):
    monkeypatch.setattr(bench_prefill, "bench_config", tiny_config)
    output = run_script(bench_prefill, monkeypatch, capsys, "--repeats", "1", "--image-sizes", "640x480")
    row = next(line for line in output.splitlines() if line.lstrip().startswith("640×480"))
    ours_tokens, llava_tokens = (int(cell) for cell in row.split("|")[1:3])
    assert ours_tokens == 3 * 32, f"a 640×480 image is 3 tiles of 32 queries, the table says {ours_tokens}"
    assert llava_tokens > 10 * ours_tokens, row


def test_gpu_benchmark_dry_run_measures_every_batch_size(monkeypatch, capsys):
    arguments = ["--dry-run", "--settings", "sdpa-dynamic-cache", "--repeats", "1", "--new-tokens", "2"]
    output = run_script(bench_gpu, monkeypatch, capsys, *arguments, "--batch-sizes", "1", "2")
    rows = [line for line in output.splitlines() if line.lstrip().startswith("sdpa-dynamic-cache")]
    assert len(rows) == 2, f"expected one row per batch size, got:\n{output}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when there is no GPU")
def test_gpu_benchmark_without_cuda_says_so(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [bench_gpu.__file__])
    with pytest.raises(SystemExit):
        bench_gpu.main()
    assert "needs a CUDA GPU" in capsys.readouterr().err
