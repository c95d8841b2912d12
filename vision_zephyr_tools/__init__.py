"""The Vision-Zephyr tools: everything in the repository besides the Hub model at its root.

    chat.py              the chat CLI (`vision-zephyr chat`)
    conversion/          the original release -> a Hub checkpoint; tiny checkpoints; the tokenizer
    training/            Trainer recipes and their data: LLaVA-format chats, VCR, the collator
    evaluation.py        VCR and MMBench scores
    demo_model/          the tiny demo model in demo/: its task, training and evaluation
    remote_code.py       the one way the tools load the root's remote-code modules
    cli.py               `vision-zephyr COMMAND ...`, one command for all of them

Install it editable from a clone (`pip install -e .`, done by requirements.txt): the tools load the clone's
remote code.
"""
