"""The Vision-Zephyr tools (the `vision-zephyr` command); the model itself is the remote code at the repository root.

    chat.py                            the chat CLI
    conversion/                        the original release -> a Hub checkpoint; tiny checkpoints; the tokenizer
    training/                          Trainer recipes and their data: LLaVA-format chats, VCR, the collator
    evaluation.py                      VCR and MMBench scores
    demo_model/                        the tiny demo model in demo/: its task, training and evaluation
    render_visual_prompts_example.py   redraws docs/visual_prompts.png
    serving.py                         what a client of the vLLM server sends
    benchmark_harness.py               what the scripts in benchmarks/ share
    remote_code.py                     the one way the tools load the root's remote-code modules
    cli.py                             `vision-zephyr COMMAND ...`, one command for all of them

Install it editable from a clone (`pip install -e .`, done by requirements.txt): the tools load the clone's
remote code.
"""
