"""`torch.compile`: the decode step of `generate` with a static cache compiles as one graph (no graph break)."""

import torch
from conftest import image_inputs, prompt_ids
from transformers import CompileConfig


def test_static_cache_decode_step_compiles_fullgraph_and_matches_eager(tiny_model):
    # The `eager` backend makes dynamo trace the whole step (fullgraph=True raises on any graph break) without
    # generating kernels, so this runs on CPU in seconds; `_compile_all_devices` lets `generate` compile on CPU.
    compile_config = CompileConfig(fullgraph=True, backend="eager", mode=None)
    compile_config._compile_all_devices = True
    input_ids = torch.tensor([prompt_ids(5, 3 * 32)])
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), **image_inputs([(1, 2)])}
    greedy = {"max_new_tokens": 4, "do_sample": False, "cache_implementation": "static"}
    eager = tiny_model.generate(**inputs, **greedy, disable_compile=True)
    compiled = tiny_model.generate(**inputs, **greedy, compile_config=compile_config)
    assert hasattr(tiny_model, "_compiled_call"), "generate did not use the compiled forward for decoding"
    assert torch.equal(compiled, eager), f"compiled decoding {compiled[0, -4:]} differs from eager {eager[0, -4:]}"
    assert type(tiny_model)._can_compile_fullgraph, "the model should declare what this test shows"
