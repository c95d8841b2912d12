"""Train Vision-Zephyr on LLaVA-format chats with transformers' `Trainer`: Stage 1 (projector) or Stage 2 (LoRA).

Stage 1 trains the Q-Former projector only (CLIP tower and language model frozen), as the original's pre-training
on LLaVA-Pretrain captions. Stage 2 trains LoRA adapters on the language model's linear layers plus the whole
projector (PEFT `modules_to_save`), as the original's VCR fine-tuning; the CLIP tower stays frozen. The loss covers
the assistant answers and their `</s>` only (`collator.ChatCollator`). Checkpoints hold only what trained: Stage 1
writes `trainable_weights.safetensors`, Stage 2 a PEFT adapter (LoRA + projector).

Every `TrainingArguments` flag works (`--bf16`, `--gradient_checkpointing`, `--train_sampling_strategy
group_by_length`, `--save_steps`, `--resume_from_checkpoint`, ...). One process or many, the same script:

    vision-zephyr train --model MODEL --data_path chats.json --image_folder images --stage 1 --output_dir out
    accelerate launch --config_file configs/deepspeed_zero2.yaml -m vision_zephyr_tools.training.train --model MODEL ...

See docs/training.md for the original's recipes.
"""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    HfArgumentParser,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_pt_utils import LengthGroupedSampler

from vision_zephyr_tools.training.collator import ChatCollator
from vision_zephyr_tools.training.llava_data import LlavaChatDataset
from vision_zephyr_tools.training.vcr import VcrChatDataset


TRAINABLE_WEIGHTS_NAME = "trainable_weights.safetensors"
PROJECTOR_MODULE = "multi_modal_projector"
# Every linear layer of the language model (the original's LoRA targets). The CLIP tower and the Q-Former use the
# same Linear names (`q_proj`, ...), so the path selects the language model.
LANGUAGE_MODEL_LINEARS = (
    r".*\.language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
)
# Prefixes that FSDP and activation checkpointing insert into parameter names of the wrapped model.
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


@dataclass
class RecipeArguments:
    model: str = field(metadata={"help": "Vision-Zephyr checkpoint folder or Hub id to start from"})
    data_path: str = field(
        metadata={
            "help": "LLaVA-format JSON list or JSONL (training/llava_data.py), or a VCR JSONL with --data_format vcr"
        }
    )
    data_format: str = field(
        default="llava",
        metadata={"help": "llava, or vcr: VCR annotations drawn and worded as the original (training/vcr.py)"},
    )
    image_folder: str | None = field(
        default=None, metadata={"help": "folder the records' image paths are relative to (default: the data's)"}
    )
    stage: int = field(
        default=1, metadata={"help": "1: projector only; 2: LoRA on the language model + projector", "choices": [1, 2]}
    )
    max_length: int = field(default=2048, metadata={"help": "tokens per sample, visual tokens included"})
    init_projector: str | None = field(
        default=None, metadata={"help": f"a Stage-1 {TRAINABLE_WEIGHTS_NAME} to load before training"}
    )
    lora_r: int = field(default=128, metadata={"help": "LoRA rank (Stage 2)"})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha (Stage 2)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (Stage 2)"})


@dataclass
class VisionZephyrTrainingArguments(TrainingArguments):
    projector_lr: float | None = field(
        default=None, metadata={"help": "learning rate of the projector's parameters (default: --learning_rate)"}
    )
    # The examples are chats, not model inputs: the collator needs every key.
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep False: the collator reads the chats"})


class VisionZephyrTrainer(Trainer):
    """`Trainer` with a projector learning rate, length grouping from the dataset, and trainable-only checkpoints."""

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None and self.args.projector_lr is not None:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            groups = parameter_groups(
                opt_model, self.get_decay_parameter_names(opt_model), self.args.weight_decay, self.args.projector_lr
            )
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return super().create_optimizer(model)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
            batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(batch_size, dataset=dataset, lengths=dataset.lengths)
        return super()._get_train_sampler(train_dataset)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if not isinstance(model, PreTrainedModel):  # a PEFT model saves its adapter (LoRA + modules_to_save)
            return super()._save(output_dir, state_dict)
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        save_trainable_weights(model, os.path.join(output_dir, TRAINABLE_WEIGHTS_NAME), state_dict)
        model.config.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def end(self) -> None:
        """Free the distributed (DDP) wrapper of the model, then destroy the process group (`Trainer.end`).

        DDP's reducer keeps its own reference to the process group. Freed from the reducer, gloo's process group
        joins its worker threads with the GIL held while a worker may still need the GIL to free a finished
        collective's tensors: a rank hangs after training (2-rank `torchrun` on CPU, 5 of 13 runs under
        transformers 5.19), or aborts at interpreter exit ("terminate called without an active exception") when the
        model outlives `end()`.
        """
        self.model_wrapped = self.model
        self.accelerator.free_memory()
        super().end()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        weights = Path(resume_from_checkpoint) / TRAINABLE_WEIGHTS_NAME
        if not weights.exists():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_trainable_weights(model if model is not None else self.model, weights)


def clean_name(name: str) -> str:
    for segment in WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name


def is_projector_parameter(name: str) -> bool:
    return f".{PROJECTOR_MODULE}." in f".{name}"


def parameter_groups(
    model: torch.nn.Module, decay_names: list[str], weight_decay: float, projector_lr: float
) -> list[dict]:
    """AdamW groups of the trainable parameters: (projector or not) x (weight decay or not), projector at its lr."""
    groups = []
    for in_projector in (False, True):
        for decays in (True, False):
            params = [
                parameter
                for name, parameter in model.named_parameters()
                if parameter.requires_grad
                and is_projector_parameter(clean_name(name)) == in_projector
                and (name in decay_names) == decays
            ]
            if params:
                group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
                groups.append({**group, "lr": projector_lr} if in_projector else group)
    return groups


def trainable_parameter_names(model: torch.nn.Module) -> set[str]:
    return {clean_name(name) for name, parameter in model.named_parameters() if parameter.requires_grad}


def save_trainable_weights(model: torch.nn.Module, path: str, state_dict: dict | None = None) -> None:
    """Writes the trainable parameters only, under the model's own `state_dict` names."""
    trainable = trainable_parameter_names(model)
    state_dict = model.state_dict() if state_dict is None else state_dict
    weights = {
        clean_name(name): tensor.detach().cpu().contiguous()
        for name, tensor in state_dict.items()
        if clean_name(name) in trainable
    }
    save_file(weights, path, metadata={"format": "pt"})


def load_trainable_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Loads a `trainable_weights.safetensors` into `model`; every tensor must match a parameter by name and shape."""
    weights = load_file(str(path))
    parameters = {clean_name(name): parameter for name, parameter in model.named_parameters()}
    for name, tensor in weights.items():
        if name not in parameters:
            raise ValueError(f"{path}: {name!r} is not a parameter of the model")
        if parameters[name].shape != tensor.shape:
            raise ValueError(
                f"{path}: {name!r} has shape {tuple(tensor.shape)}, the model's is {parameters[name].shape}"
            )
    with torch.no_grad():
        for name, tensor in weights.items():
            parameters[name].copy_(tensor)


def prepare_model(recipe: RecipeArguments) -> torch.nn.Module:
    """The model of a stage: everything frozen but the projector (Stage 1), plus LoRA on the LM (Stage 2)."""
    model = AutoModelForImageTextToText.from_pretrained(recipe.model, trust_remote_code=True, dtype=torch.float32)
    if recipe.init_projector:
        load_trainable_weights(model, recipe.init_projector)
    model.requires_grad_(False)
    getattr(model.model, PROJECTOR_MODULE).requires_grad_(True)
    if recipe.stage == 1:
        return model
    try:
        import peft
    except ImportError as error:
        raise ImportError("Stage 2 needs PEFT: pip install peft (see requirements-dev.txt)") from error
    lora = peft.LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=LANGUAGE_MODEL_LINEARS,
        modules_to_save=[PROJECTOR_MODULE],
    )
    return peft.get_peft_model(model, lora)


def training_dataset(recipe: RecipeArguments, seed: int):
    if recipe.data_format == "vcr":
        if recipe.image_folder is None:
            raise ValueError("--image_folder: VCR training needs the vcr1images folder")
        return VcrChatDataset(recipe.data_path, recipe.image_folder, seed)
    if recipe.data_format != "llava":
        raise ValueError(f"--data_format: expected 'llava' or 'vcr', got {recipe.data_format!r}")
    return LlavaChatDataset(recipe.data_path, recipe.image_folder)


def build_trainer(recipe: RecipeArguments, training_args: VisionZephyrTrainingArguments) -> VisionZephyrTrainer:
    processor = AutoProcessor.from_pretrained(recipe.model, trust_remote_code=True)
    return VisionZephyrTrainer(
        model=prepare_model(recipe),
        args=training_args,
        train_dataset=training_dataset(recipe, training_args.seed),
        data_collator=ChatCollator(processor, max_length=recipe.max_length),
        processing_class=processor,
    )


def parse_arguments(argv: list[str] | None = None) -> tuple[RecipeArguments, VisionZephyrTrainingArguments]:
    parser = HfArgumentParser((RecipeArguments, VisionZephyrTrainingArguments), description=__doc__)
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> VisionZephyrTrainer:
    """The `train` command: train, save, then end the run (a distributed run's process group is destroyed)."""
    recipe, training_args = parse_arguments(argv)
    trainer = build_trainer(recipe, training_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()
    trainer.end()
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
