"""The OpenAI-compatible server, started as the README says, answers chat requests with `generate()`'s tokens."""

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import CASES, MAX_NEW_TOKENS, running_server

from vision_zephyr_tools.serving import client_request, png_data_url


CONCURRENT_CLIENTS = 8


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url


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
