"""Serving throughput: vLLM's OpenAI server at 1, 8 and 32 concurrent requests against `generate()` one request at
a time and batched, on the same machine, in one run.

Every request has its own image and question (a chat with one image), greedy decoding and exactly `--new-tokens`
new tokens (EOS ignored on both sides), so the token counts are equal. Reported: generated tokens/s over the whole
phase, and p50/p95 latency per request (for batched `generate()`, a request's latency is its batch's).
Runs in the environment of requirements-serve.txt; the server is started with the README's flags.

    .venv-serve/bin/python benchmarks/bench_serving.py --requests 32 --new-tokens 16
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vision_zephyr_tools.conversion.make_tiny_checkpoint import make_tiny_checkpoint
from vision_zephyr_tools.serving import png_data_url


REPO_ROOT = Path(__file__).resolve().parent.parent


QUESTIONS = ["What is shown here?", "Describe the colours.", "Is anything marked?", "What is at the top left?"]


def make_requests(count: int) -> list[tuple[Image.Image, str]]:
    rng = np.random.default_rng(0)
    sizes = [(320, 240), (640, 480), (300, 700), (900, 400)]
    return [
        (Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), QUESTIONS[i % len(QUESTIONS)])
        for i, (w, h) in enumerate(sizes[i % len(sizes)] for i in range(count))
    ]


def chat(image: Image.Image, question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]


def summary(name: str, latencies: list[float], tokens: int, wall: float) -> str:
    p50 = statistics.median(latencies)
    p95 = sorted(latencies)[max(0, round(0.95 * len(latencies)) - 1)]
    return f"| {name} | {tokens / wall:.1f} | {p50:.2f} | {p95:.2f} | {wall:.1f} |"


def run_generate(model, processor, requests, new_tokens: int, batch_size: int) -> tuple[list[float], float]:
    latencies, start = [], time.perf_counter()
    for first in range(0, len(requests), batch_size):
        batch = requests[first : first + batch_size]
        inputs = processor.apply_chat_template(
            [chat(image, question) for image, question in batch],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
        began = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        latencies += [time.perf_counter() - began] * len(batch)
    return latencies, time.perf_counter() - start


def start_server(checkpoint: Path, port: int, log) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
        "--trust-remote-code", "--model-impl", "transformers", "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "2048", "--limit-mm-per-prompt", '{"image": 2}',
        "--gpu-memory-utilization", "0.15", "--trust-request-mm-kwargs",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the vLLM server did not start; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return process
        except OSError:
            time.sleep(2)


def served_request(port: int, checkpoint: Path, processor, image, question, new_tokens: int) -> float:
    prompt = processor.apply_chat_template(chat(image, question), add_generation_prompt=True)
    body = {
        "model": str(checkpoint),
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": png_data_url(image)}},
                    {"type": "text", "text": question},
                ],
            }
        ],
        "temperature": 0, "max_tokens": new_tokens, "ignore_eos": True,
        "mm_processor_kwargs": {"qformer_text": prompt},
    }  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=900) as response:
        assert json.load(response)["usage"]["completion_tokens"] == new_tokens
    return time.perf_counter() - began


def run_server(port, checkpoint, processor, requests, new_tokens, concurrency) -> tuple[list[float], float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(lambda r: served_request(port, checkpoint, processor, *r, new_tokens), requests))
    return latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="checkpoint folder (default: a fresh tiny checkpoint)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8, help="batch of the batched generate() phase")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    checkpoint = args.model or make_tiny_checkpoint(workdir / "tiny")
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, trust_remote_code=True).eval()
    requests = make_requests(args.requests)
    tokens = args.requests * args.new_tokens
    rows = []
    for name, batch_size in [
        ("generate(), one at a time", 1),
        (f"generate(), batches of {args.batch_size}", args.batch_size),
    ]:
        latencies, wall = run_generate(model, processor, requests, args.new_tokens, batch_size)
        rows.append(summary(name, latencies, tokens, wall))
        print(rows[-1], flush=True)
    del model
    with (workdir / "server.log").open("w") as log:
        server = start_server(checkpoint, args.port, log)
        try:
            run_server(args.port, checkpoint, processor, requests[:2], args.new_tokens, 1)  # warm-up
            for concurrency in args.concurrency:
                latencies, wall = run_server(args.port, checkpoint, processor, requests, args.new_tokens, concurrency)
                rows.append(summary(f"vLLM server, {concurrency} concurrent", latencies, tokens, wall))
                print(rows[-1], flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"\n{args.requests} requests × {args.new_tokens} new tokens, torch threads {torch.get_num_threads()}")
    print("| setup | tokens/s | p50 latency (s) | p95 latency (s) | wall (s) |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
