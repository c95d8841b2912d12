"""Controls: the served comparisons can fail. The sharpened tiny model answers each question differently, and
its answers change when the Q-Former reads other text, so shared features or KV between questions would show."""

import torch
from conftest import CASES, MAX_NEW_TOKENS, chat_inputs


def test_one_image_asked_two_questions_gets_two_answers(expected):
    assert expected["same image, question A"]["answer"] != expected["same image, question B"]["answer"]


def test_the_answer_depends_on_the_text_the_qformer_reads(tiny_checkpoint, processor, expected):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, trust_remote_code=True).eval()
    _, images, question = next(case for case in CASES if case[0] == "same image, question A")
    inputs = chat_inputs(processor, images, question)
    other = processor(
        text="<image>", images=[image for image, _ in images], qformer_text="<s>Other.", return_tensors="pt"
    )
    inputs["qformer_input_ids"], inputs["qformer_attention_mask"] = (
        other.qformer_input_ids,
        other.qformer_attention_mask,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    assert output[0, inputs.input_ids.shape[1] :].tolist() != expected["same image, question A"]["answer"]
