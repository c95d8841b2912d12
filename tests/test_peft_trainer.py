"""Fine-tuning with the usual tools: PEFT LoRA on the LM and the Q-Former, and `Trainer` with a chat collator."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

from vision_zephyr_tools.training.collator import IGNORE_INDEX, ChatCollator


peft = pytest.importorskip("peft", reason="PEFT is a dev requirement (requirements-dev.txt)")

# LoRA targets: the LM's attention and the Q-Former's attention + FFN. A bare name list would also hit the CLIP
# tower, whose layers use the same Linear names (`q_proj`, ..., `fc1`, `fc2`), so a regex selects by path.
LM_AND_QFORMER = (
    r".*\.language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    r"|.*\.multi_modal_projector\.layers\.\d+\.(self_attn|cross_attn)\.(q_proj|k_proj|v_proj|o_proj)"
    r"|.*\.multi_modal_projector\.layers\.\d+\.mlp\.(fc1|fc2)"
)
ANSWERS = ["A red box.", "Blue.", "Two cats.", "Nothing."]


def picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8))


def chat(index: int) -> list[dict]:
    image_block = {"type": "image", "image": picture(index)}
    if index % 2 == 0:
        image_block["visual_prompts"] = [{"type": "box", "xyxy": [8, 8, 40, 30], "color": "red"}]
    question = {"type": "text", "text": f"Question {index}: what is marked?"}
    return [
        {"role": "user", "content": [image_block, question]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWERS[index]}]},
    ]


@pytest.fixture(scope="module")
def processor(tiny_checkpoint):
    return AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)


@pytest.fixture(scope="module")
def batch(processor) -> dict[str, torch.Tensor]:
    return ChatCollator(processor)([{"messages": chat(0)}])


def load_model(checkpoint):
    return AutoModelForImageTextToText.from_pretrained(checkpoint, trust_remote_code=True)


def lora_model(checkpoint):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=LM_AND_QFORMER, init_lora_weights="gaussian")
    return peft.get_peft_model(load_model(checkpoint), config)


@pytest.fixture(scope="module")
def trained_lora(tiny_checkpoint, batch, tmp_path_factory):
    """A LoRA model before and after one AdamW step on the collated batch, with its adapter saved."""
    model = lora_model(tiny_checkpoint).train()
    base_before = {name: tensor.clone() for name, tensor in model.named_parameters() if "lora_" not in name}
    lora_before = {name: tensor.clone() for name, tensor in model.named_parameters() if "lora_" in name}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    outputs = model(**batch)  # LoRA's B starts at zero: these are the base model's logits
    outputs.loss.backward()
    optimizer.step()
    adapter_dir = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(adapter_dir)
    return {
        "model": model.eval(),
        "loss": outputs.loss.detach(),
        "base_logits": outputs.logits.detach(),
        "trained_logits": logits(model, batch),
        "base_before": base_before,
        "lora_before": lora_before,
        "adapter_dir": adapter_dir,
    }


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def test_collator_labels_only_the_assistant_answer_and_its_eos(processor):
    batch = ChatCollator(processor)([{"messages": chat(index)} for index in range(2)])
    for row, answer in enumerate(ANSWERS[:2]):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert processor.decode(labelled) == f"{answer}</s>", f"sample {row}: labels must be the answer + </s> only"
    assert batch["pixel_values"].shape[0] == 2 and "image_grids" in batch


def test_lora_regex_targets_the_language_model_and_qformer_but_not_the_vision_tower(tiny_checkpoint):
    model = lora_model(tiny_checkpoint)
    adapted = [name for name, module in model.named_modules() if hasattr(module, "lora_A")]
    config = model.base_model.model.config
    per_qformer_layer, per_lm_layer = 2 * 4 + 2, 4
    expected = config.qformer_num_layers * per_qformer_layer + config.text_config.num_hidden_layers * per_lm_layer
    assert len(adapted) == expected, f"expected {expected} LoRA layers, got {len(adapted)}: {adapted}"
    assert not [name for name in adapted if "vision_tower" in name], "the CLIP tower must stay untouched"


def test_lora_training_step_changes_only_the_adapter(trained_lora):
    model = trained_lora["model"]
    assert torch.isfinite(trained_lora["loss"])
    parameters = dict(model.named_parameters())
    unchanged_base = all(torch.equal(parameters[name], before) for name, before in trained_lora["base_before"].items())
    changed_lora = [
        name for name, before in trained_lora["lora_before"].items() if not torch.equal(parameters[name], before)
    ]
    assert unchanged_base, "a LoRA step must leave the base weights frozen"
    assert len(changed_lora) == len(trained_lora["lora_before"]), "every LoRA matrix gets a gradient"


def test_saved_adapter_reloads_onto_the_base_model_with_identical_logits(tiny_checkpoint, trained_lora, batch):
    reloaded = peft.PeftModel.from_pretrained(load_model(tiny_checkpoint), trained_lora["adapter_dir"]).eval()
    expected = trained_lora["trained_logits"]
    assert not torch.equal(expected, trained_lora["base_logits"]), "the trained adapter should change the logits"
    assert torch.equal(logits(reloaded, batch), expected)


def test_merge_and_unload_gives_the_same_logits(tiny_checkpoint, trained_lora, batch):
    adapted = peft.PeftModel.from_pretrained(load_model(tiny_checkpoint), trained_lora["adapter_dir"]).eval()
    merged = adapted.merge_and_unload()
    assert type(merged).__name__ == "VisionZephyrForConditionalGeneration"
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, batch), trained_lora["trained_logits"], rtol=1e-4, atol=1e-4)


def text_chat(index: int) -> list[dict]:
    return [
        {"role": "user", "content": f"Question {index}: what colour is the sky?"},
        {"role": "assistant", "content": ANSWERS[index]},
    ]


def train_two_steps(checkpoint, processor, examples, output_dir, **checkpointing) -> Trainer:
    """A `Trainer` after two steps (batch 1) on `examples`, from the checkpoint's weights."""
    args = TrainingArguments(
        **checkpointing,
        output_dir=str(output_dir),
        per_device_train_batch_size=1,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        remove_unused_columns=False,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    model = load_model(checkpoint)
    model.model.vision_tower.requires_grad_(False)  # as LLaVA-style fine-tuning does; keeps the test fast
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=ChatCollator(processor))
    trainer.train()
    assert checkpointing_is_on(trainer.model) == any(checkpointing.values())
    return trainer


def checkpointing_is_on(model) -> bool:
    """What `is_activation_checkpointing` (transformers >= 5.23) and `is_gradient_checkpointing` (earlier) report."""
    return any(getattr(module, "gradient_checkpointing", False) for module in model.modules())


def step_losses(trainer: Trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_trainer_fine_tunes_the_projector_and_lm_on_image_chats(tiny_checkpoint, processor, tmp_path):
    examples = [{"messages": chat(index)} for index in range(2)]
    trainer = train_two_steps(tiny_checkpoint, processor, examples, tmp_path)
    losses = step_losses(trainer)
    assert len(losses) == 2 and all(np.isfinite(losses)), f"expected two finite step losses, got {losses}"
    saved = load_file(tiny_checkpoint / "model.safetensors")
    trained = trainer.model.state_dict()
    for name in ("model.multi_modal_projector.query_tokens", "lm_head.weight"):
        assert not torch.equal(trained[name], saved[name]), f"{name} was not trained"
    frozen = [name for name in saved if name.startswith("model.vision_tower.")]
    assert all(torch.equal(trained[name], saved[name]) for name in frozen), "the frozen CLIP tower changed"


@pytest.fixture(scope="module")
def text_examples() -> list[dict]:
    # Text-only chats: with images, transformers' `enable_input_require_grads` (called when checkpointing is on)
    # also hooks the CLIP embeddings, so backward runs through the frozen tower and the test would take a minute.
    # Checkpointing of the Q-Former with images is covered in test_modeling.py.
    return [{"messages": text_chat(index)} for index in range(2)]


def test_gradient_checkpointing_in_training_arguments_gives_the_same_losses(
    tiny_checkpoint, processor, text_examples, tmp_path
):
    """The flag users know; transformers 5 calls it `activation_checkpointing` and keeps this name as an alias."""
    plain = step_losses(train_two_steps(tiny_checkpoint, processor, text_examples, tmp_path / "plain"))
    checkpointed = step_losses(
        train_two_steps(
            tiny_checkpoint, processor, text_examples, tmp_path / "checkpointed", gradient_checkpointing=True
        )
    )
    np.testing.assert_allclose(checkpointed, plain, rtol=1e-5)
