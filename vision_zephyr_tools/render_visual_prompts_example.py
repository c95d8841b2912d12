"""Renders the README's picture of visual prompts: a synthetic scene with one prompt of every type, each labelled,
and below it the phrase the model was trained on for each prompt.

    vision-zephyr render-visual-prompts --output docs/visual_prompts.png
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vision_zephyr_tools.remote_code import REPO_ROOT, load_repo_module


visual_prompts = load_repo_module("visual_prompts")
describe_visual_prompt, draw_visual_prompts = visual_prompts.describe_visual_prompt, visual_prompts.draw_visual_prompts


SCENE_SIZE = (672, 448)
HORIZON = 250
LEGEND_LINE_HEIGHT = 22
LEGEND_COLUMNS = (12, 36, 150)


def silhouette(draw_shape) -> Image.Image:
    """An L-mode mask of the scene's size with one object drawn in white."""
    mask = Image.new("L", SCENE_SIZE)
    draw_shape(ImageDraw.Draw(mask), 255)
    return mask


def draw_pond(draw: ImageDraw.ImageDraw, fill) -> None:
    draw.ellipse((380, 330, 560, 400), fill=fill)


def draw_car(draw: ImageDraw.ImageDraw, fill) -> None:
    draw.rounded_rectangle((60, 350, 230, 400), radius=12, fill=fill)
    draw.rounded_rectangle((100, 315, 195, 360), radius=10, fill=fill)
    draw.ellipse((80, 382, 120, 422), fill=fill)
    draw.ellipse((170, 382, 210, 422), fill=fill)


def scene() -> Image.Image:
    """Sky, hills, a house, a tree, the sun, a ball, a path, a pond and a car, drawn without any download."""
    sky_to_ground = np.linspace(0, 1, SCENE_SIZE[1])[:, None, None]
    pixels = (1 - sky_to_ground) * np.array([110, 170, 235]) + sky_to_ground * np.array([200, 225, 245])
    image = Image.fromarray(np.broadcast_to(pixels, (*SCENE_SIZE[::-1], 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.polygon([(330, HORIZON), (440, 120), (560, HORIZON)], fill=(120, 130, 150))
    draw.rectangle((0, HORIZON, SCENE_SIZE[0], SCENE_SIZE[1]), fill=(95, 160, 80))
    draw.ellipse((590, 30, 650, 90), fill=(255, 220, 90))
    draw.rectangle((60, 160, 200, 260), fill=(200, 150, 110))
    draw.polygon([(50, 160), (130, 100), (210, 160)], fill=(150, 60, 50))
    draw.rectangle((115, 210, 145, 260), fill=(90, 60, 40))
    draw.rectangle((262, 200, 278, 275), fill=(100, 70, 40))
    draw.ellipse((225, 120, 315, 215), fill=(40, 120, 50))
    draw.ellipse((600, 300, 630, 330), fill=(230, 230, 230))
    draw.line([(300, 448), (330, 380), (300, 320), (340, 270)], fill=(190, 170, 130), width=14)
    draw_pond(draw, (70, 120, 200))
    draw_car(draw, (200, 40, 40))
    return image


def example_prompts() -> list[tuple[str, dict]]:
    """(noun, prompt) pairs: one prompt of every type, each on an object of the scene."""
    return [
        ("house", {"type": "box", "xyxy": [50, 95, 212, 262], "color": "red", "label": "1"}),
        ("tree", {"type": "ellipse", "xyxy": [215, 110, 325, 280], "color": "lime", "label": "2"}),
        ("sun", {"type": "arrow", "xyxy": [520, 150, 595, 82], "color": "yellow", "label": "3"}),
        ("ball", {"type": "point", "xy": [615, 315], "color": "purple", "label": "4"}),
        ("path", {"type": "scribble", "points": [[300, 440], [330, 380], [300, 320], [340, 270]], "color": "aqua"}),
        ("mountain", {"type": "triangle", "points": [[325, 252], [440, 112], [565, 252]], "color": "orange"}),
        ("pond", {"type": "mask", "mask": silhouette(draw_pond), "color": "fuchsia", "label": "7"}),
        ("car", {"type": "mask_contour", "mask": silhouette(draw_car), "color": "gold", "label": "8"}),
    ]


def legend(rows: list[tuple[str, str, str]], width: int) -> Image.Image:
    """One row per prompt: its label, its type and its phrase, in three columns."""
    panel = Image.new("RGB", (width, LEGEND_LINE_HEIGHT * len(rows) + 10), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    font = ImageFont.load_default(15)
    for row, cells in enumerate(rows):
        for left, cell in zip(LEGEND_COLUMNS, cells, strict=True):
            draw.text((left, 6 + row * LEGEND_LINE_HEIGHT), cell, fill=(20, 20, 20), font=font)
    return panel


def render(output: Path) -> None:
    pairs = example_prompts()
    for number, (_, prompt) in enumerate(pairs, start=1):
        prompt.setdefault("label", str(number))
    drawn = draw_visual_prompts(scene(), [prompt for _, prompt in pairs])
    rows = [(prompt["label"], prompt["type"], f'"{describe_visual_prompt(prompt, noun)}"') for noun, prompt in pairs]
    panel = legend(rows, drawn.width)
    figure = Image.new("RGB", (drawn.width, drawn.height + panel.height), (255, 255, 255))
    figure.paste(drawn, (0, 0))
    figure.paste(panel, (0, drawn.height))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(output, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "docs" / "visual_prompts.png",
        help="PNG to write (default: %(default)s)",
    )
    render(parser.parse_args().output)


if __name__ == "__main__":
    main()
