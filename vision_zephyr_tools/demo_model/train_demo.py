"""Train the tiny demo Vision-Zephyr on the shapes task (demo_task.py) on CPU and save it as a checkpoint.

Every batch is generated fresh from a seeded generator and goes through the same code path as users' inputs: the
processor draws the visual prompt (any type, any named colour), tiles the image (anyres) and expands `<image>`; the
prompt is the chat template with the question; the loss is the model's own `labels` loss on the answer word and `</s>`
only, plus an auxiliary loss on the marked shape read from the Q-Former's tokens by a throw-away head. A stage 0 first
teaches the vision tower shapes and colours on its own (`pretrain_tower`), as the real model starts from a pre-trained
CLIP.

    vision-zephyr train-demo --output-dir /tmp/demo-run
    vision-zephyr train-demo --output-dir /tmp/demo-run --export /tmp/demo-export   # resumes, then exports

The defaults are v14's recipe on the legacy task (red prompts, two questions) with a language model of head dim 32,
what vLLM's CPU attention supports (v16 in BENCHMARKS.md, with the learning curves, the earlier recipes and what each
one showed). `--task broad` trains on the broad task instead: every prompt type and colour, questions in many
wordings; its best recipe so far (v20, v23 and v26 in BENCHMARKS.md, not yet good enough to replace `demo/`; 48
minutes on the 2-core Intel Xeon VM, an estimated 72 on the AMD EPYC one) adds `--question-kind-weight 1
--auxiliary-weight 3 --tower-marked-share 0.5 --steps 3000`; `--fast-tiling` shortens its stage 0 by about 6 minutes.
v28 and v29, the best broad scores so far and within the run-to-run spread of v23's, added `--patch-map-weight 2
--fast-tiling` and either `--qformer-layers 4 --text-layers 3` (v28) or half the batch in twice the steps (v29), about
76 and 79 minutes on the AMD EPYC VM.

Checkpoints (model, optimizer, scheduler, step) are written to `OUTPUT_DIR/state.pt` every `--save-every` steps, so
a run that is cut off resumes where it stopped. `--export DIR` writes the complete checkpoint folder (config with
`auto_map`, safetensors, remote-code files, processor and tokenizer files).
"""

import argparse
import copy
import math
import random
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from PIL import Image, ImageDraw
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_cosine_schedule_with_warmup
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from vision_zephyr_tools.demo_model.demo_task import (
    PROMPT_TYPES,
    QUESTION_KINDS,
    SHAPE_COLORS,
    SHAPE_KINDS,
    SHAPES_PER_IMAGE,
    TASKS,
    DemoCase,
    make_case,
    other_question,
    question_kind_of,
)
from vision_zephyr_tools.remote_code import AUTO_MAP, REMOTE_CODE_FILES, REPO_ROOT, load_repo_class, load_repo_module
from vision_zephyr_tools.training.collator import IGNORE_INDEX, ChatCollator


visual_prompts = load_repo_module("visual_prompts")
num_tiles_from_grid = load_repo_module("image_processing_anyres").num_tiles_from_grid
DEFAULT_ALPHA, SIZE_KEYS = visual_prompts.DEFAULT_ALPHA, visual_prompts.SIZE_KEYS
default_stroke_size = visual_prompts.default_stroke_size


SINGLE_SHAPE = (1, 1)
TWO_QUESTION_SHARE = 0.5
IMAGE_PROCESSOR_CLASS = "image_processing_anyres.VisionZephyrImageProcessor"
PROCESSOR_CLASS = "processing_vis_zephyr.VisionZephyrProcessor"
# The demo's own sizes: 224-px tiles of 16-px patches (14x14 patches per tile). The prompts' default line width and
# point radius scale for 336-px tiles; at 112-px tiles they shrank to 1-px lines and the model never found them, at
# 224 px they stay 2 px wide. Pinpoints: a 2x2 grid first, then the original's shapes (2x1, 1x2, 3x1, 1x3 tiles as
# (height, width)), scaled. Without the 2x2 grid a shape spans 2-4 patches in every tile and the tower trained from
# scratch could not tell a square from a circle (chance after 900 steps); in a 2x2 grid it spans 4-8.
TILE_SIZE = 224
GRID_PINPOINTS = [
    [2 * TILE_SIZE, 2 * TILE_SIZE],
    [2 * TILE_SIZE, TILE_SIZE],
    [TILE_SIZE, 2 * TILE_SIZE],
    [3 * TILE_SIZE, TILE_SIZE],
    [TILE_SIZE, 3 * TILE_SIZE],
]
VISION_CONFIG = {
    "model_type": "clip_vision_model",
    "hidden_size": 64,  # the default width; `demo_config` derives the MLP's and the projection's from it
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "image_size": TILE_SIZE,
    "patch_size": 16,
}
TEXT_CONFIG = {
    "model_type": "mistral",
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    # Head dim 32: vLLM's CPU attention runs head dims 32, 64, 80, ... but not v14's 16 (4 heads of 16).
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 32001,
    "max_position_embeddings": 1024,
    "sliding_window": 1024,
    "pad_token_id": 2,
}
PROJECTOR_CONFIG = {
    "vision_feature_layers": [[0], [2], [4]],
    "num_query_tokens": 16,
    "qformer_num_layers": 2,
    "qformer_num_attention_heads": 4,
    "tile_size": TILE_SIZE,
    "image_grid_pinpoints": GRID_PINPOINTS,
}


def demo_config(
    vision_width: int = VISION_CONFIG["hidden_size"],
    qformer_layers: int = PROJECTOR_CONFIG["qformer_num_layers"],
    text_layers: int = TEXT_CONFIG["num_hidden_layers"],
):
    """The demo model's `VisionZephyrConfig` (with `auto_map`, so the saved folder loads as remote code), its vision
    tower `vision_width` wide (MLP 4x as wide), with `qformer_layers` Q-Former blocks and `text_layers` language-model
    layers."""
    vision_config = VISION_CONFIG | {
        "hidden_size": vision_width,
        "intermediate_size": 4 * vision_width,
        "projection_dim": vision_width,
    }
    config = load_repo_class("VisionZephyrConfig")(
        vision_config=vision_config,
        text_config=TEXT_CONFIG | {"num_hidden_layers": text_layers},
        **PROJECTOR_CONFIG | {"qformer_num_layers": qformer_layers},
    )
    config.auto_map = dict(AUTO_MAP)
    return config


@torch.no_grad()
def initialize_for_training(model, edge_filter_channels: int = 0) -> None:
    """Initialisation for training from scratch: 2-D sine-cosine tile positions and a variance-preserving Q-Former.

    Positions: CLIP's default random position embeddings carry no geometry, so the tower starts as a bag of patches
    that sees colour at once but must learn where patches are before it can tell a triangle from a square or find the
    shape next to a red mark. MAE-style 2-D sine-cosine values (row in one half of the channels, column in the other)
    give that geometry from the first step; they stay trainable.

    Patch embedding: the first `edge_filter_channels` channels start as oriented edge detectors (derivative-of-Gaussian
    filters), the kind of filters a trained vision model's first layer holds. A shape is told apart by the directions
    of its edges; with all channels so initialised the tower's shape probe (attention pooling + linear head, batch 32)
    reached 87 % after 500 steps against 72 % from the default random init (one run each). They are blind to colour
    (zero-mean, the same on the three channels): the whole model trained from them alone learned the colour question
    far later and found the red prompt poorly (BENCHMARKS.md, v8), so the other channels keep the default init.

    Q-Former: with the default init (linear std 0.02, queries ~N(0, 1)) the visual tokens are the queries' own content
    and vary across images by ~0.3 % of their spread; trained from scratch the model then sat at chance for hundreds of
    steps. LeCun-normal weights and small queries make them image-dependent from the first step.
    """
    embeddings = model.model.vision_tower.embeddings
    side = embeddings.image_size // embeddings.patch_size
    embeddings.position_embedding.weight[1:] = sincos_2d_positions(side, embeddings.embed_dim)
    if edge_filter_channels:
        weight = embeddings.patch_embedding.weight[:edge_filter_channels]
        weight.copy_(
            oriented_edge_filters(edge_filter_channels, embeddings.patch_size) + 0.01 * torch.randn_like(weight)
        )
    projector = model.model.multi_modal_projector
    projector.query_tokens.normal_(0.0, 0.02)
    for module in projector.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.normal_(0.0, module.in_features**-0.5)
            module.bias.zero_()


def oriented_edge_filters(count: int, patch_size: int, directions: int = 16) -> torch.Tensor:
    """`(count, 3, patch_size, patch_size)` derivative-of-Gaussian filters: `directions` edge normals evenly around
    the circle, the same on the three colour channels, with gains 1, 1.5, 2, ... for each further set of directions."""
    centred = torch.arange(patch_size, dtype=torch.float32) - (patch_size - 1) / 2
    ys, xs = torch.meshgrid(centred, centred, indexing="ij")
    sigma = patch_size * 5 / 16
    window = torch.exp(-(xs**2 + ys**2) / (2 * sigma**2)) / sigma**2
    filters = []
    for index in range(count):
        angle = 2 * math.pi * index / directions
        gain = 1 + 0.5 * (index // directions)
        derivative = -(math.cos(angle) * xs + math.sin(angle) * ys) * window * gain
        filters.append(derivative.expand(3, -1, -1) / 6)
    return torch.stack(filters)


def sincos_2d_positions(side: int, dim: int) -> torch.Tensor:
    """`(side * side, dim)` row-major patch positions: sine and cosine of the row, then of the column."""
    frequencies = 1.0 / 100.0 ** (torch.arange(dim // 4) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")

    def encode(coordinate: torch.Tensor) -> torch.Tensor:
        angles = coordinate.flatten()[:, None].float() * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1)


def conversation(case: DemoCase) -> list[dict]:
    """The chat a user would send about `case`."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": case.question}]}]


def training_chat(case: DemoCase, visual_prompt: dict, follow_ups: list[tuple[str, str]] = ()) -> list[dict]:
    """`case`'s question and answer, followed by `follow_ups` (more questions about the same marked shape, with their
    answers: `demo_task.other_question`).

    Asking two questions of one image doubles the answers learned per pass of the vision tower, which dominates the
    cost of a step; single-question chats stay in the mix because that is what users send.
    """
    image = {"type": "image", "image": case.image, "visual_prompts": [visual_prompt]}
    chat = []
    for turn, (text, answer) in enumerate([(case.question, case.answer), *follow_ups]):
        question = {"type": "text", "text": text}
        chat.append({"role": "user", "content": [image, question] if turn == 0 else [question]})
        chat.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return chat


def encode_cases(processor, cases: list[DemoCase]) -> dict[str, torch.Tensor]:
    """Processor inputs for asking `cases`' questions, each image marked by its own prompt."""
    texts = [processor.apply_chat_template(conversation(case), add_generation_prompt=True) for case in cases]
    batch = processor(
        text=texts,
        images=[case.image for case in cases],
        visual_prompts=[[case.visual_prompt] for case in cases],
        padding=True,
        return_tensors="pt",
    )
    return dict(batch)


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean next-token cross-entropy over the labelled (answer) tokens, with the model's own head applied only at
    the positions that predict them.

    The full-vocabulary head and its log-softmax over every position from the batch's first answer on took a third of
    the model's step (BENCHMARKS.md); only a few tokens per chat are labelled. `labels` still goes to the model, so
    the Q-Former's text conditioning keeps hiding the answers.
    """
    labels = batch["labels"]
    hidden_states = model.model(**batch).last_hidden_state
    targets = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
    predicting = targets != IGNORE_INDEX
    logits = model.lm_head(hidden_states[predicting])
    return torch.nn.functional.cross_entropy(logits.float(), targets[predicting])


def training_batch(
    collator: ChatCollator,
    seed: int,
    step: int,
    batch_size: int,
    curriculum_steps: int,
    single_shape_floor: float,
    salience_steps: int,
    task: str = "broad",
    legacy_share: float = 0.0,
    prompt_type_weights: dict[str, float] | None = None,
    patch_maps: bool = False,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The batch of `step`, its marked shapes' `(kind, colour)` indices, the `QUESTION_KINDS` index of each
    question (chat by chat, turn by turn) and, with `patch_maps`, the `tiled_shape_maps` of its images' tiles: its own
    generator, so a resumed run sees the same data as an uninterrupted one.

    Two curricula fade out linearly. Scenes: a share of single-shape scenes, 100 % at step 0 falling to
    `single_shape_floor` at `curriculum_steps`; there the answer is visible without finding the prompt, which teaches
    tower, Q-Former and LM to pass colour and shape through. The floor stays because telling the shapes apart is the
    slowest thing the tower learns (chance on single shapes after 900 steps when the share fell to none at step 400).
    Prompts: drawn opaque and three times as thick at step 0, reaching the processor's defaults (alpha 0.5, scaled
    1-7 px lines) at `salience_steps`; the defaults' half-transparent thin lines are a faint signal for a tower trained
    from scratch.

    With `legacy_share`, that share of a broad run's cases are the legacy task's (red prompts, its two questions);
    `prompt_type_weights` draws the broad task's prompt types unevenly (`make_case`).
    """
    rng = random.Random(f"{seed}-{step}")
    single_shape_share = max(single_shape_floor, fading_share(step, curriculum_steps))
    salience = fading_share(step, salience_steps)
    cases, examples, marked, question_kinds = [], [], [], []
    for _ in range(batch_size):
        scene = SINGLE_SHAPE if rng.random() < single_shape_share else SHAPES_PER_IMAGE
        case = make_case(rng, scene, task=case_task(rng, task, legacy_share), prompt_type_weights=prompt_type_weights)
        prompt = salient_prompt(case.visual_prompt, case.image.size, salience)
        follow_ups = [other_question(rng, case)] if rng.random() < TWO_QUESTION_SHARE else []
        cases.append(case)
        examples.append({"messages": training_chat(case, prompt, follow_ups)})
        marked.append(attribute_indices(case))
        answers = [case.answer] + [answer for _, answer in follow_ups]
        question_kinds += [QUESTION_KINDS.index(question_kind_of(answer)) for answer in answers]
    maps = real_tiles(*tiled_shape_maps(collator.processor.image_processor, cases)) if patch_maps else None
    return collator(examples), torch.tensor(marked), torch.tensor(question_kinds), maps


def case_task(rng: random.Random, task: str, legacy_share: float) -> str:
    """The task of one training case: `task`, or the legacy task with probability `legacy_share`."""
    return "legacy" if drawn_with_share(rng, legacy_share) else task


def drawn_with_share(rng: random.Random, share: float) -> bool:
    """True with probability `share`; draws from `rng` only when `share` is positive, so recipes without the share
    keep their random draws."""
    return share > 0 and rng.random() < share


class TrainingBatches(torch.utils.data.Dataset):
    """`training_batch` of every step, as a dataset indexed by step."""

    def __init__(
        self,
        collator: ChatCollator,
        seed: int,
        steps: int,
        batch_size: int,
        curriculum_steps: int,
        single_shape_floor: float,
        salience_steps: int,
        task: str = "broad",
        legacy_share: float = 0.0,
        prompt_type_weights: dict[str, float] | None = None,
        patch_maps: bool = False,
    ):
        self.collator, self.seed, self.steps = collator, seed, steps
        self.options = (
            batch_size,
            curriculum_steps,
            single_shape_floor,
            salience_steps,
            task,
            legacy_share,
            prompt_type_weights,
            patch_maps,
        )

    def __len__(self) -> int:
        return self.steps

    def __getitem__(
        self, step: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return training_batch(self.collator, self.seed, step, *self.options)


def prefetched(batches: torch.utils.data.Dataset) -> torch.utils.data.DataLoader:
    """`batches` (each item a whole batch) drawn and tiled by one worker process a few steps ahead of training.

    Drawing, tiling and the chat template take ~0.4 s of a ~1.5 s end-to-end step, and more than the tower's step in
    stage 0; overlapped with the model's step they cost less (measured side by side, BENCHMARKS.md). The worker runs
    single-threaded to leave the cores to torch.
    """
    return torch.utils.data.DataLoader(
        batches, batch_size=None, num_workers=1, prefetch_factor=4, worker_init_fn=single_threaded
    )


def single_threaded(worker_id: int) -> None:
    torch.set_num_threads(1)


def attribute_indices(case: DemoCase) -> tuple[int, int]:
    """The marked shape's kind and colour as class indices (`SHAPE_KINDS`, `SHAPE_COLORS` order)."""
    return SHAPE_KINDS.index(case.target.kind), list(SHAPE_COLORS).index(case.target.color)


# `shape_maps` draws each kind of shape in its own channel, in `SHAPE_KINDS` order.
KIND_FILLS = {
    kind: tuple(255 if channel == index else 0 for channel in range(3)) for index, kind in enumerate(SHAPE_KINDS)
}
SHAPE_MAPS = (*SHAPE_KINDS, "marked")


def shape_maps(case: DemoCase) -> list[Image.Image]:
    """Two label images of `case`'s scene, black where no shape is: every shape in the channel of its kind (circles
    red, squares green, triangles blue), and the marked shape in red."""
    kinds, marked = Image.new("RGB", case.image.size), Image.new("RGB", case.image.size)
    for shape in case.shapes:
        shape.draw(ImageDraw.Draw(kinds), fill=KIND_FILLS[shape.kind])
    case.target.draw(ImageDraw.Draw(marked), fill=KIND_FILLS[SHAPE_KINDS[0]])
    return [kinds, marked]


def tiled_shape_maps(image_processor, cases: list[DemoCase]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch of every tile of `cases`' images, as `image_processor` tiles them, the share of its pixels covered by
    each of `SHAPE_MAPS` (a circle, a square, a triangle, the marked shape): `(images, max_tiles, patches, 4)` in
    [0, 1], zero on padding tiles; and the images' `image_grids`."""
    shares, image_grids = patch_shares(image_processor, [image for case in cases for image in shape_maps(case)])
    return torch.cat([shares[0::2], shares[1::2, ..., :1]], dim=3), image_grids[0::2]


def patch_shares(image_processor, label_images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch of every tile of the RGB `label_images`, as `image_processor` tiles them, each channel's mean level
    in [0, 1]: `(images, max_tiles, patches, 3)`, zero on padding tiles; and the images' `image_grids`.

    The labels go through the processor's own anyres layout, with its fast resize: they are soft targets, the few
    levels by which it differs from LANCZOS do not matter.
    """
    tiled = image_processor(label_images, fast_resize=True, do_normalize=False, return_tensors="pt")
    pixel_values = tiled["pixel_values"]
    pooled = torch.nn.functional.avg_pool2d(pixel_values.flatten(0, 1), VISION_CONFIG["patch_size"])
    return pooled.unflatten(0, pixel_values.shape[:2]).flatten(3).transpose(2, 3), tiled["image_grids"]


def real_tiles(maps: torch.Tensor, image_grids: torch.Tensor) -> torch.Tensor:
    """The maps of the tiles the model runs, each image's first `num_tiles_from_grid`, concatenated in its order."""
    counts = [num_tiles_from_grid(tuple(grid)) for grid in image_grids.tolist()]
    return torch.cat([image[:count] for image, count in zip(maps, counts, strict=True)])


def fading_share(step: int, fade_steps: int) -> float:
    return max(0.0, 1.0 - step / fade_steps) if fade_steps else 0.0


def salient_prompt(prompt: dict, image_size: tuple[int, int], salience: float) -> dict:
    """`prompt` with opacity and stroke raised by `salience` (0: the processor's defaults; 1: opaque, lines three
    times as thick, points half as large again).

    Box and ellipse grow outward by the extra half stroke, so a thick opaque frame never covers the shape it marks.
    A mask keeps its default style: drawn opaque it would hide the colour of the shape it covers.
    """
    if SIZE_KEYS[prompt["type"]] is None:
        return prompt
    salient = {**prompt, "alpha": DEFAULT_ALPHA + (1 - DEFAULT_ALPHA) * salience}
    if prompt["type"] == "point":
        return {**salient, "radius": round(default_stroke_size("radius", image_size) * (1 + 0.5 * salience))}
    default_width = default_stroke_size("width", image_size)
    width = round(default_width * (1 + 2 * salience))
    if prompt["type"] in ("box", "ellipse"):
        grow = (width - default_width) / 2
        left, top, right, bottom = prompt["xyxy"]
        salient["xyxy"] = [left - grow, top - grow, right + grow, bottom + grow]
    return {**salient, "width": width}


def pretrain_tower(
    model,
    processor,
    output_dir: Path,
    steps: int,
    batch_size: int,
    seed: int,
    task: str = "broad",
    marked_share: float = 0.0,
    prompt_type_weights: dict[str, float] | None = None,
    patch_map_weight: float = 0.0,
    marked_map_weight: float = 0.0,
) -> None:
    """Stage 0: the vision tower learns shape and colour with throw-away heads, before the whole model trains.

    The real model starts from a pre-trained CLIP; this one cannot. Trained end to end from scratch, the tower never
    learned to tell the shapes apart (the shape question stayed at chance in every variant of BENCHMARKS.md's sweep),
    although on its own, with an attention-pooling query and a linear head on its fused features, it learns them in a
    few hundred steps. So it first does that on single-shape scenes' base views (prompt drawn, as the model sees them),
    for the shape and, with a second query and head, the colour: trained on shape alone it lost the colour that the
    end-to-end model finds the red prompt by. With `marked_share`, that share of the images are the task's scenes of
    several shapes, labelled with the marked one: the tower also learns to find the prompt (its prompt types drawn
    by `prompt_type_weights`, as in stage 1). With `patch_map_weight`, a `PatchMapHead` also reads every patch's
    `tiled_shape_maps` (`patch_map_loss`); with `marked_map_weight`, its marked-shape map is compared across each base
    view's patches (`marked_map_loss`). The heads are then discarded. The tower's state is saved to
    `output_dir/tower.pt`, which a resumed run reuses.
    """
    tower_path = output_dir / "tower.pt"
    tower = model.model.vision_tower
    if tower_path.exists():
        tower.load_state_dict(torch.load(tower_path, weights_only=True))
        return
    feature_size = model.config.fused_vision_hidden_size
    head = AttributeProbeHead(feature_size, (len(SHAPE_KINDS), len(SHAPE_COLORS)))
    parameters = list(tower.parameters()) + list(head.parameters())
    if patch_map_weight or marked_map_weight:
        # Made only when used: its initialisation draws from the seeded generator, which recipes without it keep.
        map_head = PatchMapHead(feature_size)
        parameters += list(map_head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=2e-3, weight_decay=0.01, betas=(0.9, 0.98))
    fuse = sys.modules[type(model).__module__].fuse_vision_layers
    layers = model.config.vision_feature_layers
    batches = prefetched(
        BaseViewBatches(
            processor.image_processor,
            seed,
            steps,
            batch_size,
            task,
            marked_share,
            prompt_type_weights,
            patch_maps=bool(patch_map_weight or marked_map_weight),
        )
    )
    progress = tqdm(batches, total=steps, desc="stage 0: tower", unit="step")
    for tiles, attributes, maps in progress:
        fused = fuse(tower(tiles, output_hidden_states=True).hidden_states, layers)
        loss = attribute_loss(head(fused), attributes)
        if patch_map_weight:
            loss = loss + patch_map_weight * patch_map_loss(map_head, fused, maps)
        if marked_map_weight:
            loss = loss + marked_map_weight * marked_map_loss(map_head, fused, maps, [1] * len(fused))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        progress.set_postfix(loss=f"{loss.item():.3f}")
    torch.save(tower.state_dict(), tower_path)


class BaseViewBatches(torch.utils.data.IterableDataset):
    """Stage 0's batches: single-shape scenes (and a `marked_share` of the task's scenes) with their prompt drawn, as
    base-view tiles `(batch, 3, H, W)`, their marked shape's `(kind, colour)` indices and, with `patch_maps`, the
    base views' `tiled_shape_maps` (else `None`); one generator for the whole stage, so read by one worker only.

    Drawing and tiling cost more than the tower's step on 32 tiles: `prefetched` draws them ahead. Only the base view
    is used, so the images are tiled on a one-tile grid: the base view is the same (the image squashed to one tile),
    the grid's resize is the smallest there is.
    """

    def __init__(
        self,
        image_processor,
        seed: int,
        steps: int,
        batch_size: int,
        task: str = "broad",
        marked_share: float = 0.0,
        prompt_type_weights: dict[str, float] | None = None,
        patch_maps: bool = False,
    ):
        tile_size = image_processor.tile_size
        self.image_processor = copy.deepcopy(image_processor)
        self.image_processor.image_grid_pinpoints = [[tile_size, tile_size]]
        self.seed, self.steps, self.batch_size, self.task = seed, steps, batch_size, task
        self.marked_share, self.prompt_type_weights, self.patch_maps = marked_share, prompt_type_weights, patch_maps

    def __iter__(self):
        rng = random.Random(f"{self.seed}-tower")
        for _ in range(self.steps):
            cases = [
                make_case(rng, self.scene(rng), task=self.task, prompt_type_weights=self.prompt_type_weights)
                for _ in range(self.batch_size)
            ]
            tiles = self.image_processor(
                [case.image for case in cases],
                visual_prompts=[[case.visual_prompt] for case in cases],
                return_tensors="pt",
            )["pixel_values"][:, 0]
            maps = tiled_shape_maps(self.image_processor, cases)[0][:, 0] if self.patch_maps else None
            yield tiles, torch.tensor([attribute_indices(case) for case in cases]), maps

    def scene(self, rng: random.Random) -> tuple[int, int]:
        """How many shapes the next scene has: the task's several with probability `marked_share`."""
        return SHAPES_PER_IMAGE if drawn_with_share(rng, self.marked_share) else SINGLE_SHAPE


class AttributeProbeHead(torch.nn.Module):
    """Per attribute, one learned query attending over a set of features (a tile's fused patches in stage 0, an image's
    Q-Former tokens in the auxiliary loss), then a linear classifier."""

    def __init__(self, feature_size: int, classes_per_attribute: tuple[int, ...]):
        super().__init__()
        self.norm = torch.nn.LayerNorm(feature_size)
        self.queries = torch.nn.Parameter(torch.randn(len(classes_per_attribute), feature_size) * 0.02)
        self.classifiers = torch.nn.ModuleList(torch.nn.Linear(feature_size, count) for count in classes_per_attribute)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.norm(features)
        weights = torch.softmax(features @ self.queries.T / features.shape[-1] ** 0.5, dim=1)
        pooled = torch.einsum("bpa,bpc->bac", weights, features)
        return tuple(classifier(pooled[:, index]) for index, classifier in enumerate(self.classifiers))


class PatchMapHead(torch.nn.Module):
    """A linear read-out of the `SHAPE_MAPS` from each (layer-normalised) fused patch feature."""

    def __init__(self, feature_size: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(feature_size)
        self.linear = torch.nn.Linear(feature_size, len(SHAPE_MAPS))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(features))


def patch_map_loss(head: PatchMapHead, fused_features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Auxiliary loss: the binary cross-entropy of `head`'s reading of every patch of `fused_features`
    `(tiles, patches, channels)` against its `tiled_shape_maps` `(tiles, patches, 4)`.

    It teaches the tower patch by patch what the answers and `marked_shape_loss` teach it one label per image: which
    kind of shape covers each patch, and which shape the prompt marks, also where the prompt does not touch it (an
    arrow's shape across the gap from its head).
    """
    return torch.nn.functional.binary_cross_entropy_with_logits(head(fused_features), maps)


def marked_map_loss(
    head: PatchMapHead, fused_features: torch.Tensor, maps: torch.Tensor, tiles_per_image: list[int]
) -> torch.Tensor:
    """Auxiliary loss: per image, the cross-entropy of a softmax over all its tiles' patches of `head`'s marked-shape
    logit against the marked shape's cover of those patches (`tiled_shape_maps`), normalised to sum to one.

    `patch_map_loss` reads the marked shape patch by patch with a binary cross-entropy, where the few marked patches
    weigh little: v26's tower came out of it scoring the marked shape's patches barely above the other shapes' (mean
    0.26 against 0.18; the highest-scoring shape was the marked one in 52 % of scenes of 2-4 shapes, where a guess
    scores about 36 %; research/demo_marked_map.py). The softmax compares the patches of one image with each other, so
    all its gradient goes to telling the marked shape from the rest of the scene.
    """
    logits = head(fused_features)[..., SHAPE_MAPS.index("marked")]
    cover = maps[..., SHAPE_MAPS.index("marked")]
    losses = [
        -(image_cover.flatten() / image_cover.sum() * torch.log_softmax(image_logits.flatten(), dim=0)).sum()
        for image_logits, image_cover in zip(
            torch.split(logits, tiles_per_image), torch.split(cover, tiles_per_image), strict=True
        )
        if image_cover.sum() > 0
    ]
    return torch.stack(losses).mean()


def attribute_loss(logits: tuple[torch.Tensor, ...], attributes: torch.Tensor) -> torch.Tensor:
    """Sum of the cross-entropies of each attribute's logits against its column of `attributes`."""
    return sum(
        torch.nn.functional.cross_entropy(attribute_logits, attributes[:, index])
        for index, attribute_logits in enumerate(logits)
    )


def marked_shape_loss(
    head: AttributeProbeHead, visual_tokens: torch.Tensor, input_ids: torch.Tensor, image_token_id: int, attributes
) -> torch.Tensor:
    """Auxiliary loss: the marked shape's kind and colour, read by `head` from each image's Q-Former tokens.

    `visual_tokens` is the projector's `(num_tiles, num_query_tokens, hidden_size)` output for the batch, one image per
    chat; each chat's `<image>` tokens say how many of them are its image's.
    """
    per_image = torch.split(visual_tokens.flatten(0, 1), (input_ids == image_token_id).sum(1).tolist())
    logits = [head(tokens[None]) for tokens in per_image]
    return attribute_loss(tuple(torch.cat(column) for column in zip(*logits, strict=True)), attributes)


def question_kind_loss(
    head: torch.nn.Linear, last_hidden_state: torch.Tensor, labels: torch.Tensor, question_kinds: torch.Tensor
) -> torch.Tensor:
    """Auxiliary loss: each question's kind (`QUESTION_KINDS`), read by `head` from the language model's last hidden
    state where it predicts the answer's first token (the position before each run of labelled tokens)."""
    answered = labels != IGNORE_INDEX
    first_answer = answered & ~torch.nn.functional.pad(answered, (1, 0))[:, :-1]
    rows, columns = first_answer.nonzero(as_tuple=True)
    return torch.nn.functional.cross_entropy(head(last_hidden_state[rows, columns - 1]), question_kinds)


@torch.no_grad()
def first_token_accuracy(model, processor, cases: list[DemoCase], batch_size: int = 32) -> float:
    """Share of cases whose answer's first token is the most likely next token after the prompt (fast proxy)."""
    model.eval()
    correct = 0
    for start in range(0, len(cases), batch_size):
        chunk = cases[start : start + batch_size]
        batch = encode_cases(processor, chunk)
        predicted = model(**batch, logits_to_keep=1).logits[:, -1].argmax(-1)
        for case, token in zip(chunk, predicted.tolist(), strict=True):
            correct += token == first_answer_token(processor, case.answer)
    model.train()
    return correct / len(cases)


def first_answer_token(processor, answer: str) -> int:
    tokenizer = processor.tokenizer
    full = tokenizer(f"<|assistant|>\n{answer}", add_special_tokens=False).input_ids
    return full[len(tokenizer("<|assistant|>\n", add_special_tokens=False).input_ids)]


def auxiliary_heads(config, question_kind: bool, patch_map: bool) -> torch.nn.ModuleDict:
    """`train`'s throw-away heads: `marked_shape` always (its weights are saved even when unused), `question_kind`
    and `patch_map` when asked for.

    Made only when used and in this order: their initialisation draws from the seeded generator, and each recipe's
    weights depend on what was drawn before them."""
    hidden_size = config.text_config.hidden_size
    heads = torch.nn.ModuleDict(
        {"marked_shape": AttributeProbeHead(hidden_size, (len(SHAPE_KINDS), len(SHAPE_COLORS)))}
    )
    if question_kind:
        heads["question_kind"] = torch.nn.Linear(hidden_size, len(QUESTION_KINDS))
    if patch_map:
        heads["patch_map"] = PatchMapHead(config.fused_vision_hidden_size)
    return heads


def train(
    model,
    processor,
    output_dir: Path,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    seed: int,
    save_every: int,
    eval_every: int,
    eval_cases: list[DemoCase],
    curriculum_steps: int,
    single_shape_floor: float,
    salience_steps: int,
    auxiliary_weight: float,
    task: str = "broad",
    question_kind_weight: float = 0.0,
    legacy_share: float = 0.0,
    prompt_type_weights: dict[str, float] | None = None,
    patch_map_weight: float = 0.0,
    training_processor=None,
    marked_map_weight: float = 0.0,
) -> None:
    """AdamW with linear warm-up and cosine decay; resumes from `output_dir/state.pt` when it exists.

    With `auxiliary_weight`, a throw-away `AttributeProbeHead` also reads the marked shape's kind and colour from each
    image's Q-Former tokens, and its loss is added with that weight (`marked_shape_loss`): the answers' gradient alone
    let the shape the stage-0 tower had learned fade out of the tower and the Q-Former (BENCHMARKS.md, v9).

    With `question_kind_weight`, a throw-away linear head reads each question's kind from the language model's state
    where it starts the answer (`question_kind_loss`): the answers' gradient alone taught the broad task's question
    kinds slowly, and a shape question was answered with a colour in a third of v15's cases (BENCHMARKS.md).

    With `patch_map_weight`, a throw-away `PatchMapHead` reads every patch's `tiled_shape_maps` from the fused tower
    features that the Q-Former reads (`patch_map_loss`); with `marked_map_weight`, the same head's marked-shape map is
    also compared across each image's patches (`marked_map_loss`).

    `training_processor` (default `processor`) draws and tiles the training batches; `processor` the held-out check.
    """
    torch.manual_seed(seed)
    heads = auxiliary_heads(
        model.config, question_kind=bool(question_kind_weight), patch_map=bool(patch_map_weight or marked_map_weight)
    )
    trained_heads = [head for name, head in heads.items() if name != "marked_shape" or auxiliary_weight]
    parameters = list(model.parameters()) + [parameter for head in trained_heads for parameter in head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01, betas=(0.9, 0.98))
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps, steps)
    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    captured = {}
    if auxiliary_weight or patch_map_weight or marked_map_weight:
        model.model.multi_modal_projector.register_forward_hook(
            lambda module, inputs, output: captured.update(fused_features=inputs[0], visual_tokens=output)
        )
    if question_kind_weight:
        model.model.language_model.register_forward_hook(
            lambda module, inputs, output: captured.__setitem__("last_hidden_state", output.last_hidden_state)
        )
    state_path = output_dir / "state.pt"
    start_step = load_state(state_path, model, heads, optimizer, scheduler)
    log_path = output_dir / "log.tsv"
    started = time.monotonic()
    batches = TrainingBatches(
        ChatCollator(training_processor or processor),
        seed,
        steps,
        batch_size,
        curriculum_steps,
        single_shape_floor,
        salience_steps,
        task,
        legacy_share,
        prompt_type_weights,
        patch_maps=bool(patch_map_weight or marked_map_weight),
    )
    remaining = prefetched(torch.utils.data.Subset(batches, range(start_step, steps)))
    progress = tqdm(remaining, initial=start_step, total=steps, desc="training", unit="step")
    model.train()
    for step, (batch, marked, question_kinds, maps) in enumerate(progress, start=start_step):
        loss = answer_loss(model, batch)
        if auxiliary_weight:
            image_token_id = model.config.image_token_id
            auxiliary = marked_shape_loss(
                heads["marked_shape"], captured["visual_tokens"], batch["input_ids"], image_token_id, marked
            )
            loss = loss + auxiliary_weight * auxiliary
        if question_kind_weight:
            kinds = question_kind_loss(
                heads["question_kind"], captured["last_hidden_state"], batch["labels"], question_kinds
            )
            loss = loss + question_kind_weight * kinds
        if patch_map_weight:
            loss = loss + patch_map_weight * patch_map_loss(heads["patch_map"], captured["fused_features"], maps)
        if marked_map_weight:
            image_tokens = (batch["input_ids"] == model.config.image_token_id).sum(1)
            tiles_per_image = (image_tokens // model.config.num_query_tokens).tolist()
            loss = loss + marked_map_weight * marked_map_loss(
                heads["patch_map"], captured["fused_features"], maps, tiles_per_image
            )
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        done = step + 1
        accuracy = first_token_accuracy(model, processor, eval_cases) if done % eval_every == 0 else math.nan
        with log_path.open("a") as log:
            log.write(f"{done}\t{time.monotonic() - started:.1f}\t{loss.item():.4f}\t{accuracy:.4f}\n")
        if not math.isnan(accuracy):
            progress.write(f"step {done}: held-out first-token accuracy {accuracy:.3f}")
        if done % save_every == 0 or done == steps:
            save_state(state_path, model, heads, optimizer, scheduler, done)


def save_state(path: Path, model, heads, optimizer, scheduler, step: int) -> None:
    """Writes the resumable training state atomically (a cut-off mid-write keeps the previous one)."""
    partial = path.with_suffix(".partial")
    torch.save(
        {
            "model": model.state_dict(),
            "auxiliary_heads": heads.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
        },
        partial,
    )
    partial.replace(path)


def load_state(path: Path, model, heads, optimizer, scheduler) -> int:
    """Restores a saved training state; returns the step to continue from (0 without one)."""
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    heads.load_state_dict(state["auxiliary_heads"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["step"]


def check_resumed_architecture(output_dir: Path, vision_width: int, qformer_layers: int, text_layers: int) -> None:
    """Stops with a clear message when `output_dir` holds a run whose model is shaped otherwise than these flags say:
    its saved weights cannot load into this model. The width is read from the saved patch embedding (`tower.pt`
    holds only the tower), the depths from the saved layers' names."""
    for name in ("state.pt", "tower.pt"):  # state.pt first: a resume loads it, not tower.pt
        path = output_dir / name
        if path.exists():
            saved = saved_architecture(torch.load(path, weights_only=True, mmap=True), tower_only=name == "tower.pt")
            asked = {"--vision-width": vision_width, "--qformer-layers": qformer_layers, "--text-layers": text_layers}
            for flag, value in saved.items():
                if value != asked[flag]:
                    raise SystemExit(
                        f"{path} is a run with {flag} {value}, not {asked[flag]}: resume it with {flag} {value}, "
                        "or start a new run in another --output-dir"
                    )
            return


def saved_architecture(state: dict, tower_only: bool) -> dict[str, int]:
    """The `train-demo` flags that shape the model, read from a saved `state.pt` (or, `tower_only`, `tower.pt`)."""
    if tower_only:
        return {"--vision-width": len(state["embeddings.patch_embedding.weight"])}
    weights = state["model"]
    depths = {
        "--qformer-layers": "model.multi_modal_projector.layers.",
        "--text-layers": "model.language_model.layers.",
    }
    return {"--vision-width": len(weights["model.vision_tower.embeddings.patch_embedding.weight"])} | {
        flag: len({key[len(prefix) :].split(".")[0] for key in weights if key.startswith(prefix)})
        for flag, prefix in depths.items()
    }


def demo_processor(fast_resize: bool = False):
    """The repository's processor (tokenizer, chat template) with the demo's tile size, pinpoints and query count;
    with `fast_resize`, one that tiles with the fast resize instead of the original's LANCZOS (training only)."""
    image_processor = get_class_from_dynamic_module(IMAGE_PROCESSOR_CLASS, str(REPO_ROOT))(
        tile_size=TILE_SIZE, image_grid_pinpoints=GRID_PINPOINTS, fast_resize=fast_resize
    )
    return get_class_from_dynamic_module(PROCESSOR_CLASS, str(REPO_ROOT))(
        image_processor=image_processor,
        tokenizer=AutoTokenizer.from_pretrained(REPO_ROOT, trust_remote_code=True),
        chat_template=(REPO_ROOT / "chat_template.jinja").read_text(),
        num_query_tokens=PROJECTOR_CONFIG["num_query_tokens"],
    )


def export_checkpoint(model, processor, export_dir: Path) -> None:
    """Writes the complete checkpoint folder: weights, config, remote code, processor and tokenizer files."""
    export_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(export_dir)
    for name in REMOTE_CODE_FILES:
        (export_dir / name).write_bytes((REPO_ROOT / name).read_bytes())
    processor.save_pretrained(export_dir)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/demo-run"), help="training state and log")
    parser.add_argument("--export", type=Path, help="write the complete checkpoint folder here after training")
    parser.add_argument("--task", choices=TASKS, default="legacy", help="the legacy task or the broad one (demo_task)")
    parser.add_argument("--steps", type=int, default=1800, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the training data")
    parser.add_argument(
        "--curriculum-steps", type=int, default=400, help="steps until single-shape scenes fall to the floor"
    )
    parser.add_argument(
        "--single-shape-floor", type=float, default=0.3, help="share of single-shape scenes after the curriculum"
    )
    parser.add_argument(
        "--salience-steps", type=int, default=1200, help="steps until prompts are drawn with the default style"
    )
    parser.add_argument(
        "--tower-steps", type=int, default=800, help="stage 0: steps of the tower's shape and colour pre-training"
    )
    parser.add_argument(
        "--edge-filter-channels",
        type=int,
        default=32,
        help="patch-embedding channels that start as oriented edge filters (the rest keep the default init)",
    )
    parser.add_argument(
        "--auxiliary-weight",
        type=float,
        default=2.0,
        help="weight of the auxiliary loss on the marked shape's kind and colour read from the Q-Former tokens",
    )
    parser.add_argument(
        "--question-kind-weight",
        type=float,
        default=0.0,
        help="weight of the auxiliary loss on each question's kind read from the language model's state",
    )
    parser.add_argument(
        "--patch-map-weight",
        type=float,
        default=0.0,
        help="weight of the auxiliary loss on each patch's shape maps (kind of shape, marked or not), both stages",
    )
    parser.add_argument(
        "--marked-map-weight",
        type=float,
        default=0.0,
        help="weight of the auxiliary loss on where the marked shape is, compared across each image's patches, both "
        "stages",
    )
    parser.add_argument(
        "--tower-marked-share",
        type=float,
        default=0.0,
        help="stage 0: share of images that are the task's scenes of several shapes, labelled with the marked one",
    )
    parser.add_argument(
        "--legacy-share", type=float, default=0.0, help="share of a broad run's training cases from the legacy task"
    )
    parser.add_argument(
        "--prompt-type-weight",
        action="append",
        default=[],
        metavar="TYPE=WEIGHT",
        help="draw the broad task's prompts of TYPE with this relative weight in training (others 1); repeatable",
    )
    parser.add_argument(
        "--vision-width",
        type=int,
        default=VISION_CONFIG["hidden_size"],
        help="the vision tower's width (a multiple of its 4 heads); a resumed run keeps the width it started with",
    )
    parser.add_argument(
        "--qformer-layers",
        type=int,
        default=PROJECTOR_CONFIG["qformer_num_layers"],
        help="the Q-Former's blocks (the first also reads the prompt text); a resumed run keeps the depth it started with",
    )
    parser.add_argument(
        "--text-layers",
        type=int,
        default=TEXT_CONFIG["num_hidden_layers"],
        help="the language model's layers; a resumed run keeps the depth it started with",
    )
    parser.add_argument(
        "--fast-tiling",
        action="store_true",
        help="tile the training images with the processor's fast resize, not the original's LANCZOS: a lighter data "
        "worker; the held-out check and the exported processor keep LANCZOS",
    )
    parser.add_argument("--tower-batch-size", type=int, default=32, help="stage 0: images per step")
    parser.add_argument("--save-every", type=int, default=100, help="steps between resumable checkpoints")
    parser.add_argument("--eval-every", type=int, default=200, help="steps between held-out accuracy checks")
    parser.add_argument("--eval-cases", type=int, default=96, help="held-out cases of the accuracy check")
    parser.add_argument("--eval-seed", type=int, default=10_000, help="seed of the held-out cases")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    heads = VISION_CONFIG["num_attention_heads"]
    if args.vision_width < heads or args.vision_width % heads:
        parser.error(f"--vision-width must be a positive multiple of {heads} (the heads), got {args.vision_width}")
    if not 0 <= args.edge_filter_channels <= args.vision_width:
        parser.error(
            f"--edge-filter-channels must be between 0 and {args.vision_width}, got {args.edge_filter_channels}"
        )
    for flag in ("qformer_layers", "text_layers"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    for flag in ("auxiliary_weight", "question_kind_weight", "patch_map_weight", "marked_map_weight"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be 0 (off) or positive, got {getattr(args, flag)}")
    for flag in ("tower_marked_share", "legacy_share"):
        if not 0 <= getattr(args, flag) <= 1:
            parser.error(f"--{flag.replace('_', '-')} must be a share between 0 and 1, got {getattr(args, flag)}")
    args.prompt_type_weights = parsed_prompt_type_weights(parser, args.prompt_type_weight)
    return args


def parsed_prompt_type_weights(parser: argparse.ArgumentParser, values: list[str]) -> dict[str, float] | None:
    """`--prompt-type-weight TYPE=WEIGHT` values as a dict (`None` when none is given)."""
    weights = {}
    for value in values:
        prompt_type, _, weight = value.partition("=")
        try:
            weights[prompt_type] = float(weight)
        except ValueError:
            weights[prompt_type] = math.nan
        if prompt_type not in PROMPT_TYPES or not 0 <= weights[prompt_type] < math.inf:
            parser.error(
                f"--prompt-type-weight: expected TYPE=WEIGHT with TYPE one of {', '.join(PROMPT_TYPES)} and WEIGHT a "
                f"finite number >= 0, got {value!r}"
            )
    if weights and not any(weights.get(prompt_type, 1.0) for prompt_type in PROMPT_TYPES):
        parser.error("--prompt-type-weight: at least one prompt type needs a weight above 0")
    return weights or None


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    check_resumed_architecture(args.output_dir, args.vision_width, args.qformer_layers, args.text_layers)
    torch.manual_seed(args.seed)
    processor = demo_processor()
    training_processor = demo_processor(fast_resize=True) if args.fast_tiling else processor
    model = load_repo_class("VisionZephyrForConditionalGeneration")(
        demo_config(args.vision_width, args.qformer_layers, args.text_layers)
    )
    initialize_for_training(model, args.edge_filter_channels)
    if args.tower_steps and not (args.output_dir / "state.pt").exists():
        pretrain_tower(
            model,
            training_processor,
            args.output_dir,
            args.tower_steps,
            args.tower_batch_size,
            args.seed,
            args.task,
            args.tower_marked_share,
            args.prompt_type_weights,
            args.patch_map_weight,
            args.marked_map_weight,
        )
    rng = random.Random(args.eval_seed)
    # Half of the broad task's held-out check is asked in held-out wordings.
    eval_cases = [make_case(rng, task=args.task, held_out_share=0.5) for _ in range(args.eval_cases)]
    train(
        model,
        processor,
        args.output_dir,
        args.steps,
        args.batch_size,
        args.learning_rate,
        args.warmup_steps,
        args.seed,
        args.save_every,
        args.eval_every,
        eval_cases,
        args.curriculum_steps,
        args.single_shape_floor,
        args.salience_steps,
        args.auxiliary_weight,
        args.task,
        args.question_kind_weight,
        args.legacy_share,
        args.prompt_type_weights,
        args.patch_map_weight,
        training_processor,
        args.marked_map_weight,
    )
    if args.export:
        export_checkpoint(model.eval(), processor, args.export)
        print(f"demo checkpoint written to {args.export}")


if __name__ == "__main__":
    main()
