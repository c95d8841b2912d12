"""Where a broad-task training run loses the marked shape: its tower's patch map, its Q-Former tokens, its answer.

Reads a `train-demo` training state (`OUTPUT_DIR/state.pt` of a run with `--auxiliary-weight` and `--patch-map-weight`
or `--marked-map-weight`, so that the throw-away heads are saved with the model) and asks fresh broad cases of
several shapes. Per case, three readings of which shape is marked:

- the tower: the shape whose patches the `PatchMapHead` scores highest on the marked-shape map, on average over its
  cover (the fused features the Q-Former reads);
- the Q-Former: the marked shape's kind and colour, both right, read by the `marked_shape` head from the image's
  Q-Former tokens (the auxiliary loss's head);
- the answer: the answer's first token right (`first_token_accuracy`'s test).

BENCHMARKS.md ("Demo model", v26 and v27) has the results:

    python research/demo_marked_map.py /work/runs/demo-v26/state.pt --n 160 --seed 4242
"""

import argparse
import random
import statistics
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from vision_zephyr_tools.demo_model import train_demo
from vision_zephyr_tools.demo_model.demo_task import DemoCase, make_case
from vision_zephyr_tools.remote_code import load_repo_class


def trained_model_and_heads(state_path: Path):
    """The model and the throw-away heads (`marked_shape`, `question_kind`, `patch_map`) of a training state."""
    state = torch.load(state_path, weights_only=True)
    saved_heads = {name.split(".")[0] for name in state["auxiliary_heads"]}
    if not {"marked_shape", "patch_map"} <= saved_heads:
        raise SystemExit(
            f"{state_path} holds the heads {sorted(saved_heads)}; this analysis reads 'marked_shape' and 'patch_map': "
            "use the state of a run with --auxiliary-weight and --patch-map-weight or --marked-map-weight above 0"
        )
    shape = train_demo.saved_architecture(state, tower_only=False)
    config = train_demo.demo_config(shape["--vision-width"], shape["--qformer-layers"], shape["--text-layers"])
    model = load_repo_class("VisionZephyrForConditionalGeneration")(config)
    model.load_state_dict(state["model"])
    heads = train_demo.auxiliary_heads(model.config, question_kind=True, patch_map=True)
    heads.load_state_dict(state["auxiliary_heads"], strict=False)
    return model.eval(), heads.eval()


def shape_covers(image_processor, case: DemoCase, tiles: int) -> torch.Tensor:
    """Per shape of `case`'s scene, the share of each patch of the image's first `tiles` tiles that it covers:
    `(shapes, tiles, patches)`, tiled as `tiled_shape_maps` tiles its maps."""
    masks = []
    for shape in case.shapes:
        mask = Image.new("RGB", case.image.size)
        shape.draw(ImageDraw.Draw(mask), fill=(255, 0, 0))
        masks.append(mask)
    shares, _ = train_demo.patch_shares(image_processor, masks)
    return shares[:, :tiles, :, 0]


def mean_scores_by_shape(marked_scores: torch.Tensor, covers: torch.Tensor) -> list[float]:
    """Per shape, the mean of `marked_scores` `(tiles, patches)` over its `shape_covers` `covers`, weighted by them."""
    return ((covers * marked_scores).sum((1, 2)) / covers.sum((1, 2)).clamp_min(1e-6)).tolist()


@torch.no_grad()
def readings(model, heads, processor, cases: list[DemoCase], batch_size: int = 16) -> list[dict]:
    """Per case: its prompt type, whether the tower's map, the Q-Former's tokens and the answer get the marked shape,
    and the map's mean marked score on the marked shape and on the others."""
    captured = {}
    model.model.multi_modal_projector.register_forward_hook(
        lambda module, inputs, output: captured.update(fused_features=inputs[0], visual_tokens=output)
    )
    image_token_id, queries = model.config.image_token_id, model.config.num_query_tokens
    rows = []
    for start in range(0, len(cases), batch_size):
        chunk = cases[start : start + batch_size]
        batch = train_demo.encode_cases(processor, chunk)
        predicted = model(**batch, logits_to_keep=1).logits[:, -1].argmax(-1).tolist()
        tiles = ((batch["input_ids"] == image_token_id).sum(1) // queries).tolist()
        for case, token, fused, visual in zip(
            chunk,
            predicted,
            torch.split(captured["fused_features"], tiles),
            torch.split(captured["visual_tokens"], tiles),
            strict=True,
        ):
            kind, colour = heads["marked_shape"](visual.flatten(0, 1)[None])
            marked_scores = torch.sigmoid(heads["patch_map"](fused)[..., train_demo.SHAPE_MAPS.index("marked")])
            covers = shape_covers(processor.image_processor, case, len(fused))
            target = case.shapes.index(case.target)
            means = mean_scores_by_shape(marked_scores, covers)
            rows.append(
                {
                    "prompt": case.prompt_type,
                    "tower": means.index(max(means)) == target,
                    "qformer": (kind.argmax(-1).item(), colour.argmax(-1).item())
                    == train_demo.attribute_indices(case),
                    "answer": token == train_demo.first_answer_token(processor, case.answer),
                    "marked score": means[target],
                    "other scores": [score for index, score in enumerate(means) if index != target],
                }
            )
    return rows


def several_shape_cases(count: int, seed: int) -> list[DemoCase]:
    """The first `count` broad cases of several shapes drawn from `seed`, half of them in held-out wordings."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        case = make_case(rng, held_out_share=0.5)
        if len(case.shapes) > 1:
            cases.append(case)
    return cases


def report(rows: list[dict]) -> None:
    def line(name: str, selected: list[dict]) -> None:
        shares = [sum(row[key] for row in selected) / len(selected) for key in ("tower", "qformer", "answer")]
        print(
            f"{name:14} n={len(selected):4}  tower map {shares[0]:.3f}  Q-Former {shares[1]:.3f}  answer {shares[2]:.3f}"
        )

    line("all", rows)
    for prompt_type in sorted({row["prompt"] for row in rows}):
        line(prompt_type, [row for row in rows if row["prompt"] == prompt_type])
    marked = statistics.mean(row["marked score"] for row in rows)
    others = statistics.mean(score for row in rows for score in row["other scores"])
    print(f"tower map's mean marked score: on the marked shape {marked:.3f}, on the others {others:.3f}")
    wrong = [row for row in rows if not row["answer"]]
    print(
        f"wrong answers: {len(wrong)}, with the Q-Former's reading also wrong: {sum(not r['qformer'] for r in wrong)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("state", type=Path, help="a train-demo OUTPUT_DIR/state.pt")
    parser.add_argument("--n", type=int, default=160, help="cases of several shapes")
    parser.add_argument("--seed", type=int, default=4242)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, heads = trained_model_and_heads(args.state)
    report(readings(model, heads, train_demo.demo_processor(), several_shape_cases(args.n, args.seed)))


if __name__ == "__main__":
    main()
