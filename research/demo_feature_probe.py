"""Where does the demo model lose the shape? Linear probes on its features for single-shape scenes.

For every stage of the model (the fused tower features pooled over all patches of all tiles, by mean and by max; the
Q-Former's visual tokens, mean-pooled and the base view's flattened; the language model's last hidden state where the
answer starts) a logistic regression is fitted on 320 images and tested on 160 others, once for the shape and once
for the colour of the only shape. `--reinit` probes the same architecture freshly initialised (train_demo's init), as
the baseline that training should beat:

    python research/demo_feature_probe.py --model demo
    python research/demo_feature_probe.py --model demo --reinit
"""

import argparse
import dataclasses
import random
import sys

import torch

from vision_zephyr_tools.demo_model import train_demo
from vision_zephyr_tools.demo_model.demo_task import QUESTIONS, SHAPE_COLORS, SHAPE_KINDS, make_case
from vision_zephyr_tools.demo_model.eval_demo import load_demo


TRAIN_IMAGES, TEST_IMAGES = 320, 160


@torch.no_grad()
def stage_features(model, processor, cases) -> dict[str, torch.Tensor]:
    """`(len(cases), dim)` features per stage, each case asked the shape question."""
    num_tiles_from_grid = sys.modules[type(model).__module__].num_tiles_from_grid  # the processor's own count
    features: dict[str, list[torch.Tensor]] = {
        "tower, mean over patches": [],
        "tower, max over patches": [],
        "Q-Former tokens, mean": [],
        "Q-Former base-view tokens, flattened": [],
        "LM state at the answer": [],
    }
    for start in range(0, len(cases), 16):
        chunk = [
            dataclasses.replace(case, question_kind="shape", question=QUESTIONS["shape"])
            for case in cases[start : start + 16]
        ]
        batch = train_demo.encode_cases(processor, chunk)
        grids = model.model.image_grid_shapes(batch.get("image_sizes"), batch.get("image_grids"))
        image_outputs = model.model.get_image_features(batch["pixel_values"], image_grids=torch.tensor(grids))
        tiles_per_image = [num_tiles_from_grid(grid) for grid in grids]
        per_image = torch.split(image_outputs.last_hidden_state, tiles_per_image)
        tokens_per_tile = model.model.visual_tokens_per_tile
        for fused, tokens in zip(per_image, image_outputs.pooler_output, strict=True):
            features["tower, mean over patches"].append(fused.mean((0, 1)))
            features["tower, max over patches"].append(fused.amax((0, 1)))
            features["Q-Former tokens, mean"].append(tokens.mean(0))
            features["Q-Former base-view tokens, flattened"].append(tokens[:tokens_per_tile].flatten())
        outputs = model(**batch, output_hidden_states=True, logits_to_keep=1)
        features["LM state at the answer"] += list(outputs.hidden_states[-1][:, -1])
    return {stage: torch.stack(values).float() for stage, values in features.items()}


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float, float]:
    """Train and test accuracy of a logistic regression on standardised features."""
    train = slice(0, TRAIN_IMAGES)
    features = (features - features[train].mean(0)) / (features[train].std(0) + 1e-6)
    torch.manual_seed(0)
    classifier = torch.nn.Linear(features.shape[1], num_classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(500):
        loss = torch.nn.functional.cross_entropy(classifier(features[train]), labels[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        hits = classifier(features).argmax(-1) == labels
    return hits[train].float().mean().item(), hits[TRAIN_IMAGES:].float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="checkpoint folder")
    parser.add_argument("--reinit", action="store_true", help="probe a fresh initialisation of the same config")
    parser.add_argument("--seed", type=int, default=5, help="seed of the single-shape scenes")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, processor = load_demo(args.model)
    if args.reinit:
        torch.manual_seed(0)
        model = type(model)(model.config)
        train_demo.initialize_for_training(model)
        model.eval()
    rng = random.Random(args.seed)
    cases = [make_case(rng, train_demo.SINGLE_SHAPE) for _ in range(TRAIN_IMAGES + TEST_IMAGES)]
    shapes = torch.tensor([SHAPE_KINDS.index(case.target.kind) for case in cases])
    colours = torch.tensor([list(SHAPE_COLORS).index(case.target.color) for case in cases])
    print(f"{'stage':<38} {'shape train/test':>18} {'colour train/test':>18}")
    for stage, features in stage_features(model, processor, cases).items():
        shape, colour = probe_accuracy(features, shapes, 3), probe_accuracy(features, colours, 4)
        print(f"{stage:<38} {shape[0]:8.1%} /{shape[1]:6.1%} {colour[0]:9.1%} /{colour[1]:6.1%}")


if __name__ == "__main__":
    main()
