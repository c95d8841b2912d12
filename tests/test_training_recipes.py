"""Training recipes (vision_zephyr_tools/training/train.py): LLaVA-format data, answer-only labels, what each stage trains, and real runs."""

import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from vision_zephyr_tools.remote_code import REPO_ROOT
from vision_zephyr_tools.training.collator import IGNORE_INDEX, ChatCollator
from vision_zephyr_tools.training.llava_data import LlavaChatDataset, load_records
from vision_zephyr_tools.training.train import (
    TRAINABLE_WEIGHTS_NAME,
    RecipeArguments,
    VisionZephyrTrainingArguments,
    build_trainer,
    main,
    prepare_model,
)


ANSWERS = [["A red square."], ["Two.", "Yes, on the left.", "Blue."], ["A cat"], ["Nothing at all."]]


def write_dataset(folder: Path) -> Path:
    """Four LLaVA-format records with small images: one with a visual prompt, one with three rounds."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for index, answers in enumerate(ANSWERS):
        pixels = np.random.default_rng(index).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image{index}.png")
        turns = []
        for round_index, answer in enumerate(answers):
            question = f"<image>\nQuestion {index}?" if round_index == 0 else f"And then {round_index}?"
            turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        records.append({"id": str(index), "image": f"image{index}.png", "conversations": turns})
    records[0]["visual_prompts"] = [{"type": "box", "xyxy": [4, 4, 40, 30], "color": "red"}]
    path = folder / "chats.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def processor(tiny_checkpoint):
    return AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)


def recipe(checkpoint, dataset_path, **overrides) -> RecipeArguments:
    return RecipeArguments(model=str(checkpoint), data_path=str(dataset_path), **overrides)


def training_arguments(output_dir, **overrides) -> VisionZephyrTrainingArguments:
    defaults = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 2,
        "max_steps": 2,
        "learning_rate": 2e-5,
        "projector_lr": 2e-3,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "save_strategy": "no",
    }
    return VisionZephyrTrainingArguments(**{**defaults, **overrides})


def test_record_becomes_a_chat_with_the_image_first_and_the_prompt_drawn(dataset_path):
    dataset = LlavaChatDataset(dataset_path)
    messages = dataset[0]["messages"]
    assert [message["role"] for message in messages] == ["user", "assistant"]
    image_block, text_block = messages[0]["content"]
    assert image_block["type"] == "image" and text_block == {"type": "text", "text": "Question 0?"}
    plain = np.asarray(Image.open(dataset_path.parent / "image0.png").convert("RGB"))
    assert not np.array_equal(np.asarray(image_block["image"]), plain), "the record's visual prompt was not drawn"
    assert len(dataset[1]["messages"]) == 6


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([], "record 1: expected a dict"),
        ({"image": "a.png"}, "record 1['conversations']"),
        ({"conversations": [{"from": "gpt", "value": "hi"}]}, "record 1['conversations'][0]['from']"),
        ({"conversations": [{"from": "human", "value": 3}]}, "record 1['conversations'][0]['value']"),
        ({"conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "x"}]}, "['image']"),
        ({"conversations": [{"from": "human", "value": "hi"}]}, "expected the last turn from 'gpt'"),
        ({"image": 5, "conversations": []}, "record 1['image']"),
    ],
)
def test_bad_records_are_a_value_error_naming_the_record_and_key(tmp_path, record, message):
    good = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([good, record]))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_records(path)


def test_bad_visual_prompt_names_the_record(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    record = {
        "image": "a.png",
        "visual_prompts": [{"type": "box", "xyxy": [9, 9, 1, 1]}],
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}],
    }
    (tmp_path / "chats.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"record 0\['visual_prompts'\]: visual_prompts\[0\]\['xyxy'\]"):
        LlavaChatDataset(tmp_path / "chats.jsonl")[0]


def labelled_runs(labels: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of every contiguous run of labelled positions."""
    positions = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
    runs, start = [], None
    for position, following in zip(positions, [*positions[1:], None], strict=True):
        start = position if start is None else start
        if following != position + 1:
            runs.append((start, position + 1))
            start = None
    return runs


def test_labels_are_exactly_every_answer_and_its_eos_across_turns(dataset_path, processor):
    """No drift (the original lost one token per turn) and `</s>` is trained (the original never trained it)."""
    dataset = LlavaChatDataset(dataset_path)
    batch = ChatCollator(processor)([dataset[1], dataset[2]])
    for row, answers in enumerate([ANSWERS[1], ANSWERS[2]]):
        input_ids, labels = batch["input_ids"][row], batch["labels"][row]
        runs = labelled_runs(labels)
        decoded = [processor.decode(input_ids[start:end]) for start, end in runs]
        assert decoded == [f"{answer}</s>" for answer in answers], f"sample {row}: labelled spans {decoded}"
        for start, end in runs:
            assert torch.equal(labels[start:end], input_ids[start:end])
            assert processor.decode(input_ids[:start]).endswith("<|assistant|>\n"), "the mask must start at the answer"
            assert input_ids[end - 1] == processor.tokenizer.eos_token_id
            following = processor.decode(input_ids[end:])
            assert following == "" or following.startswith("<|user|>"), f"unlabelled answer tokens: {following!r:.40}"


def test_max_length_truncates_the_answer_tail_and_rejects_cutting_the_image(dataset_path, processor):
    example = LlavaChatDataset(dataset_path)[1]
    full = ChatCollator(processor)([example])["input_ids"].shape[1]
    truncated = ChatCollator(processor, max_length=full - 3)([example])
    assert truncated["input_ids"].shape[1] == full - 3
    assert (truncated["labels"] != IGNORE_INDEX).sum() > 0
    with pytest.raises(ValueError, match="image"):
        ChatCollator(processor, max_length=20)([example])


def trainable_names(model) -> list[str]:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def learning_rates(trainer) -> dict[str, float]:
    """Learning rate of every trainable parameter, by name, from the optimizer the trainer builds."""
    group_of = {id(p): group["lr"] for group in trainer.create_optimizer().param_groups for p in group["params"]}
    return {name: group_of[id(p)] for name, p in trainer.model.named_parameters() if p.requires_grad}


def test_stage1_trains_only_the_projector_at_the_projector_learning_rate(tiny_checkpoint, dataset_path, tmp_path):
    trainer = build_trainer(recipe(tiny_checkpoint, dataset_path, stage=1), training_arguments(tmp_path))
    names = trainable_names(trainer.model)
    projector = [name for name, _ in trainer.model.named_parameters() if ".multi_modal_projector." in name]
    assert names and names == projector, "Stage 1 must train every projector parameter and nothing else"
    assert set(learning_rates(trainer).values()) == {2e-3}


def test_stage2_trains_lora_on_the_language_model_and_the_whole_projector(tiny_checkpoint, dataset_path, tmp_path):
    trainer = build_trainer(recipe(tiny_checkpoint, dataset_path, stage=2, lora_r=4), training_arguments(tmp_path))
    rates = learning_rates(trainer)
    lora = {name for name in rates if "lora_" in name}
    projector = {name for name in rates if ".multi_modal_projector.modules_to_save." in name}
    assert lora and all(".language_model." in name for name in lora), "LoRA belongs on the language model"
    assert projector and lora | projector == set(rates), f"unexpected trainables: {set(rates) - lora - projector}"
    assert {rates[name] for name in lora} == {2e-5} and {rates[name] for name in projector} == {2e-3}


def test_group_by_length_uses_the_datasets_estimated_lengths(tiny_checkpoint, dataset_path, tmp_path):
    arguments = training_arguments(tmp_path, train_sampling_strategy="group_by_length")
    trainer = build_trainer(recipe(tiny_checkpoint, dataset_path), arguments)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler)
    assert sampler.lengths == trainer.train_dataset.lengths and len(set(sampler.lengths)) > 1


def test_stage1_run_checkpoints_only_the_projector_and_resumes_to_the_same_weights(
    tiny_checkpoint, dataset_path, tmp_path
):
    def run(output_dir: Path, *extra: str):
        return main(
            [
                *("--model", str(tiny_checkpoint), "--data_path", str(dataset_path), "--stage", "1"),
                *("--output_dir", str(output_dir), "--per_device_train_batch_size", "2", "--projector_lr", "1e-2"),
                *("--max_steps", "2", "--save_steps", "1", "--use_cpu", "--report_to", "none"),
                *("--disable_tqdm", "true", *extra),
            ]
        )

    run(tmp_path / "whole")
    checkpoint = load_file(tmp_path / "whole" / "checkpoint-1" / TRAINABLE_WEIGHTS_NAME)
    initial = load_file(tiny_checkpoint / "model.safetensors")
    projector = {name for name in initial if name.startswith("model.multi_modal_projector.")}
    assert set(checkpoint) == projector, "a Stage-1 checkpoint holds the projector and nothing else"
    queries = "model.multi_modal_projector.query_tokens"
    assert not torch.equal(checkpoint[queries], initial[queries]), "the projector did not train"

    resumed = run(tmp_path / "resumed", "--resume_from_checkpoint", str(tmp_path / "whole" / "checkpoint-1"))
    assert resumed.state.global_step == 2
    whole_final = load_file(tmp_path / "whole" / TRAINABLE_WEIGHTS_NAME)
    resumed_final = load_file(tmp_path / "resumed" / TRAINABLE_WEIGHTS_NAME)
    assert not torch.equal(whole_final[queries], checkpoint[queries])
    for name, tensor in whole_final.items():
        torch.testing.assert_close(resumed_final[name], tensor, msg=f"resuming from step 1 changed {name}")


def test_stage2_run_from_a_stage1_projector_saves_lora_and_projector_only(tiny_checkpoint, dataset_path, tmp_path):
    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    model = prepare_model(recipe(tiny_checkpoint, dataset_path))
    with torch.no_grad():
        model.model.multi_modal_projector.query_tokens.fill_(0.25)
    from vision_zephyr_tools.training.train import save_trainable_weights

    save_trainable_weights(model, str(stage1 / TRAINABLE_WEIGHTS_NAME))
    args = [
        *("--model", str(tiny_checkpoint), "--data_path", str(dataset_path), "--stage", "2", "--lora_r", "4"),
        *("--init_projector", str(stage1 / TRAINABLE_WEIGHTS_NAME), "--output_dir", str(tmp_path / "stage2")),
        *("--max_steps", "1", "--per_device_train_batch_size", "2", "--save_strategy", "no"),
        *("--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--learning_rate", "0"),
    ]
    trainer = main(args)
    adapter = load_file(tmp_path / "stage2" / "adapter_model.safetensors")
    assert not [
        name for name in adapter if "vision_tower" in name or ("lora_" not in name and "projector" not in name)
    ]
    queries = [tensor for name, tensor in adapter.items() if name.endswith("multi_modal_projector.query_tokens")]
    assert len(queries) == 1 and torch.all(queries[0] == 0.25), "Stage 2 must start from the Stage-1 projector"
    assert trainer.state.global_step == 1
    assert not trainer.accelerator._models, "main() must end the run with trainer.end()"


def test_two_process_run_completes_and_saves(tiny_checkpoint, dataset_path, tmp_path):
    """`torchrun` with the gloo backend on CPU (`accelerate launch --cpu` starts a single process)."""
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"),
        *("-m", "vision_zephyr_tools.training.train"),
        *("--model", str(tiny_checkpoint), "--data_path", str(dataset_path), "--stage", "1"),
        *("--output_dir", str(tmp_path), "--max_steps", "2", "--per_device_train_batch_size", "1"),
        *("--projector_lr", "1e-2", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true"),
        *("--save_strategy", "no", "--train_sampling_strategy", "group_by_length"),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    # Two processes of batch 1 see two different samples per step: 2 steps = one epoch of the 4 records.
    assert state["epoch"] == 1.0, f"the data was not sharded over the two processes (epoch {state['epoch']})"
    saved = load_file(tmp_path / TRAINABLE_WEIGHTS_NAME)
    assert saved and all(name.startswith("model.multi_modal_projector.") for name in saved)


def test_end_frees_the_distributed_wrapper_before_destroying_the_process_group(
    tiny_checkpoint, dataset_path, tmp_path, monkeypatch
):
    """DDP's reducer holds the process group: freed only after `Trainer.end`, gloo can hang a finished rank."""
    trainer = build_trainer(recipe(tiny_checkpoint, dataset_path), training_arguments(tmp_path))
    wrapper = torch.nn.Module()  # stands in for the DistributedDataParallel that `accelerator.prepare` keeps
    trainer.model_wrapped = wrapper
    trainer.accelerator._models.append(wrapper)
    wrapper_alive = weakref.ref(wrapper)
    del wrapper
    freed_before_end = []
    monkeypatch.setattr(Trainer, "end", lambda self: freed_before_end.append(wrapper_alive() is None))
    trainer.end()
    assert freed_before_end == [True]


@pytest.mark.parametrize("name", ["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"])
def test_accelerate_configs_load_and_fsdp_wraps_classes_of_the_model(name, tiny_model):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO_ROOT / "configs" / f"{name}.yaml"))
    assert config.mixed_precision == "bf16" and config.num_processes > 1
    wrapped = config.fsdp_config.get("fsdp_transformer_layer_cls_to_wrap", "")
    classes = {type(module).__name__ for module in tiny_model.modules()}
    assert set(filter(None, wrapped.split(","))) <= classes, f"{name}: wraps classes the model does not have"
