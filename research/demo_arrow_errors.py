"""Where a demo checkpoint's arrows fail: accuracy on fresh arrow cases of the broad task by the arrow's geometry.

For each case: the distance from the arrow's head to the marked shape's centre and the arrow's length (both in the
marked shape's sizes), the distance from the head to the nearest other shape's centre (in sizes) and the image's
longest side; accuracy is printed per third of each, with how many wrong answers name another shape of the scene.
BENCHMARKS.md ("Demo model", v22 and v26) has the results:

    python research/demo_arrow_errors.py /work/runs/demo-v26-export --n 240 --seed 555
"""

import argparse
import itertools
import math
import random
from collections.abc import Sequence

from vision_zephyr_tools.demo_model.demo_task import QUESTION_KINDS, DemoCase, Shape, answer_for, make_case
from vision_zephyr_tools.demo_model.eval_demo import generate_answers, load_demo


def arrow_cases(count: int, seed: int) -> list[DemoCase]:
    """The first `count` arrow cases of the broad task drawn from `seed`, half of them in held-out wordings."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        case = make_case(rng, held_out_share=0.5)
        if case.prompt_type == "arrow":
            cases.append(case)
    return cases


def head_distance(case: DemoCase, shape: Shape) -> float:
    """Pixels from the arrow's head to `shape`'s centre."""
    return math.dist(case.visual_prompt["xyxy"][2:], (shape.x, shape.y))


def others_by_head_distance(case: DemoCase) -> list[Shape]:
    """The scene's shapes other than the marked one, nearest the arrow's head first."""
    others = [shape for shape in case.shapes if shape is not case.target]
    return sorted(others, key=lambda shape: head_distance(case, shape))


def arrow_geometry(case: DemoCase) -> dict[str, float]:
    """The measures the accuracy is split by, for one arrow case."""
    tail_x, tail_y, head_x, head_y = case.visual_prompt["xyxy"]
    target, others = case.target, others_by_head_distance(case)
    return {
        "head to marked centre / size": head_distance(case, target) / target.size,
        "length / size": math.dist((tail_x, tail_y), (head_x, head_y)) / target.size,
        "head to nearest other centre / size": head_distance(case, others[0]) / target.size if others else math.inf,
        "longest image side (px)": float(max(case.image.size)),
    }


def names_another_shape(answer: str, case: DemoCase, nearest_only: bool = False) -> bool:
    """Whether `answer` is what a question of any kind about a shape other than the marked one expects (with
    `nearest_only`, about the other shape whose centre is nearest the arrow's head)."""
    others = others_by_head_distance(case)
    shapes = others[:1] if nearest_only else others
    return any(answer == answer_for(shape, kind) for shape in shapes for kind in QUESTION_KINDS)


def accuracy_by_thirds(values: Sequence[float], right: Sequence[bool]) -> list[tuple[float, float, float, int]]:
    """`(low, high, accuracy, count)` per third of the finite `values`, sorted by value (ties stay in one third)."""
    pairs = sorted((value, ok) for value, ok in zip(values, right, strict=True) if math.isfinite(value))
    bounds = [pairs[len(pairs) * third // 3][0] for third in range(3)] + [math.inf]
    thirds = []
    for low, high in itertools.pairwise(bounds):
        inside = [(value, ok) for value, ok in pairs if low <= value < high]
        if inside:
            thirds.append((low, inside[-1][0], sum(ok for _, ok in inside) / len(inside), len(inside)))
    return thirds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="demo checkpoint folder")
    parser.add_argument("--n", type=int, default=240, help="number of arrow cases")
    parser.add_argument("--seed", type=int, default=555, help="seed of the cases (training never uses an int)")
    args = parser.parse_args()
    model, processor = load_demo(args.model)
    cases = arrow_cases(args.n, args.seed)
    answers = generate_answers(model, processor, cases, with_prompt=True, batch_size=16)
    right = [answer == case.answer for answer, case in zip(answers, cases, strict=True)]
    wrong = [(answer, case) for answer, case, ok in zip(answers, cases, right, strict=True) if not ok]
    print(f"arrows answered right: {sum(right) / len(right):.1%} of {len(cases)}")
    print(f"wrong: {len(wrong)}, naming another shape of the scene: {sum(names_another_shape(*w) for w in wrong)}")
    print(
        f"  of which the one nearest the arrow's head: {sum(names_another_shape(*w, nearest_only=True) for w in wrong)}"
    )
    geometry = [arrow_geometry(case) for case in cases]
    for measure in geometry[0]:
        thirds = accuracy_by_thirds([row[measure] for row in geometry], right)
        print(f"{measure}: " + "; ".join(f"{low:.2f}-{high:.2f}: {acc:.0%} (n={n})" for low, high, acc, n in thirds))


if __name__ == "__main__":
    main()
