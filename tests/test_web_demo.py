"""The web demo (`space/app.py`) in a real browser: upload an example, click a box, ask, read the streamed answer.

One session drives the page as a user would (headless Chromium through Playwright, the app in a subprocess on a free
loopback port); the tests then check what the page shows against the Python API. Needs gradio and playwright
(`requirements-web.txt`) and Chromium at /usr/bin/chromium, and skips naming what is missing otherwise.
"""

import importlib.util
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


REPO_ROOT = Path(__file__).resolve().parent.parent
APP = REPO_ROOT / "space" / "app.py"
DEMO_DIR = REPO_ROOT / "demo"
EXAMPLE_IMAGE = REPO_ROOT / "examples" / "demo.png"
BOX_CORNERS = ((151, 43), (314, 206))  # the README example's box, in image pixels
QUESTION = "What shape is marked?"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT_S = 120
PAGE_TIMEOUT_MS = 60_000


def missing_requirement() -> str | None:
    for module in ("gradio", "playwright"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (install requirements-web.txt as the README says)"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


MISSING_REQUIREMENT = missing_requirement()
if MISSING_REQUIREMENT and os.environ.get("VISION_ZEPHYR_REQUIRE_WEB_DEMO") == "1":
    raise RuntimeError(f"VISION_ZEPHYR_REQUIRE_WEB_DEMO=1 (CI's web step) but {MISSING_REQUIREMENT}")
pytestmark = pytest.mark.skipif(
    MISSING_REQUIREMENT is not None, reason=f"web demo browser test: {MISSING_REQUIREMENT}"
)


@dataclass(frozen=True)
class ImagePlacement:
    """Where an `<img>` shows its picture: Gradio fits it in the element (`object-fit: contain`, never enlarged)."""

    left: float
    top: float
    scale: float

    def client_point(self, pixel: tuple[int, int]) -> tuple[int, int]:
        """The first whole client coordinates (a mouse clicks whole ones) that Gradio reports as `pixel` or after it."""
        return (
            math.ceil(self.left + (pixel[0] - 0.5) * self.scale),
            math.ceil(self.top + (pixel[1] - 0.5) * self.scale),
        )

    def pixel_at(self, client: tuple[int, int]) -> list[int]:
        """The image pixel Gradio reports for a click there (its `Math.round` of the unscaled offset)."""
        return [
            math.floor((client[0] - self.left) / self.scale + 0.5),
            math.floor((client[1] - self.top) / self.scale + 0.5),
        ]


@dataclass(frozen=True)
class AskedPage:
    """What the page showed after the scenario, and the box its clicks placed."""

    box: list[int]
    answer: str
    canvas: Image.Image
    code: str


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class AppServer:
    """`space/app.py` starting in a subprocess; `wait_until_serving` lets the browser start meanwhile."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"space/app.py exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        pytest.fail(
            f"space/app.py did not serve {self.url} in {SERVER_START_TIMEOUT_S} s:\n{self.log_path.read_text()}"
        )


def image_placement(image_element) -> ImagePlacement:
    left, top, width, height, natural_width, natural_height = image_element.evaluate(
        "img => { const box = img.getBoundingClientRect();"
        " return [box.left, box.top, box.width, box.height, img.naturalWidth, img.naturalHeight]; }"
    )
    scale = min(width / natural_width, height / natural_height, 1)
    return ImagePlacement(
        left + (width - natural_width * scale) / 2, top + (height - natural_height * scale) / 2, scale
    )


def python_api_answer(box: list[int], max_new_tokens: int) -> str:
    """The demo model's answer to the same request through processor + model, as the README's Python example."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(DEMO_DIR, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(DEMO_DIR, trust_remote_code=True).eval()
    image = Image.open(EXAMPLE_IMAGE).convert("RGB")
    prompts = [{"type": "box", "xyxy": box, "color": "red"}]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image, "visual_prompts": prompts},
                {"type": "text", "text": QUESTION},
            ],
        }
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.post_process_image_text_to_text(output[:, inputs["input_ids"].shape[1] :])[0].strip()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> Iterator[AppServer]:
    """The web demo of the demo model on a free loopback port, in a subprocess."""
    port = free_loopback_port()
    log_path = tmp_path_factory.mktemp("web-demo-server") / "app.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "VIS_ZEPHYR_MODEL": str(DEMO_DIR)}
    command = [sys.executable, str(APP), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield AppServer(f"http://127.0.0.1:{port}/", process, log_path)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory) -> Iterator[object]:
    """A page of headless Chromium with a fresh profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1300},
        )
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


@pytest.fixture(scope="module")
def asked_page(app_server, browser_page, tmp_path_factory) -> AskedPage:
    """Uploads the example, places a box with two clicks, asks the question and waits for the whole answer."""
    from playwright.sync_api import expect

    expect.set_options(timeout=PAGE_TIMEOUT_MS)  # its default, 5 s, is too short for a loaded CI machine
    page = browser_page
    app_server.wait_until_serving()
    page.goto(app_server.url, wait_until="domcontentloaded")
    page.locator("#image input[type=file]").set_input_files(EXAMPLE_IMAGE)
    canvas_image = page.locator("#canvas img")
    expect(canvas_image).to_be_visible()
    status = page.locator("#status")
    placement = image_placement(canvas_image)
    clicks = [placement.client_point(corner) for corner in BOX_CORNERS]
    for click in clicks:  # in quick succession, as a user clicks: the second must not be lost
        page.mouse.click(*click)
    expect(status).to_contain_text("1 prompt placed")
    (x1, y1), (x2, y2) = (placement.pixel_at(click) for click in clicks)
    box = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]

    page.locator("#question textarea").fill(QUESTION)
    page.locator("#question textarea").press("Enter")
    expect(status).to_contain_text("Turn 1 answered")
    code = page.locator("#code .cm-content")
    expect(code).to_contain_text(f'"text": "{QUESTION}"')  # the code box has caught up with the page
    page.screenshot(path=tmp_path_factory.mktemp("web-demo-screenshot") / "web_demo.png", full_page=True)
    canvas_png = page.request.get(canvas_image.evaluate("img => img.src")).body()
    return AskedPage(
        box=box,
        answer=page.locator('#chat [data-testid="bot"]').last.inner_text().strip(),
        canvas=Image.open(io.BytesIO(canvas_png)).convert("RGB"),
        code=code.inner_text(),
    )


def test_streamed_answer_equals_the_python_api_answer(asked_page):
    max_new_tokens = int(re.search(r"max_new_tokens=(\d+)", asked_page.code).group(1))
    expected = python_api_answer(asked_page.box, max_new_tokens)
    assert asked_page.answer == expected, (
        f"the page answered {asked_page.answer!r} for box {asked_page.box}, the Python API {expected!r}"
    )


def test_page_shows_the_image_as_the_processor_draws_it(asked_page):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(DEMO_DIR, trust_remote_code=True)
    prompts = [{"type": "box", "xyxy": asked_page.box, "color": "red"}]
    expected = np.asarray(processor.draw_visual_prompts(Image.open(EXAMPLE_IMAGE).convert("RGB"), prompts))
    shown = np.asarray(asked_page.canvas)
    assert shown.shape == expected.shape, f"the page shows a {shown.shape} image, the processor draws {expected.shape}"
    differing = int((shown != expected).any(axis=2).sum())
    assert differing == 0, f"{differing} pixels of the shown image differ from processor.draw_visual_prompts"


def test_clicks_become_the_box_in_the_code_box(asked_page):
    expected = f'{{"type": "box", "xyxy": {json.dumps(asked_page.box)}, "color": "red"}}'
    assert expected in asked_page.code, f"the code box lacks {expected}:\n{asked_page.code}"
    assert f'"text": "{QUESTION}"' in asked_page.code, "the code box must ask the question that was asked"


def test_a_failing_turn_shows_its_error_and_the_server_keeps_answering(asked_page, app_server, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    page.locator("#question textarea").fill("word " * 2000)  # longer than the demo model's context
    page.locator("#question textarea").press("Enter")
    expect(page.locator("#status")).to_contain_text("Not answered")
    expect(page.locator('#chat [data-testid="bot"]').last).to_contain_text("The prompt is")

    other_session = page.context.new_page()
    try:
        other_session.goto(app_server.url, wait_until="domcontentloaded")
        other_session.locator("#image input[type=file]").set_input_files(EXAMPLE_IMAGE)
        expect(other_session.locator("#canvas img")).to_be_visible()
        other_session.locator("#question textarea").fill(QUESTION)
        other_session.locator("#question textarea").press("Enter")
        expect(other_session.locator("#status")).to_contain_text("Turn 1 answered")
    finally:
        other_session.close()
    page.locator("#question textarea").fill(QUESTION)
    page.locator("#question textarea").press("Enter")
    expect(page.locator("#status")).to_contain_text("Turn 2 answered")
