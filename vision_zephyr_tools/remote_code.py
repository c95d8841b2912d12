"""The one way the tools load the repository root's remote code.

The root .py files are the Hub repository's remote code, not a package. The tools import them the way
`trust_remote_code=True` imports a downloaded checkpoint's code, through transformers' dynamic-module loader over the
repository root, so they run exactly what users of the Hub repository run, and no import path is edited:

    load_repo_class("VisionZephyrForConditionalGeneration")  # a class named in config.json's auto_map
    load_repo_module("visual_prompts").draw_visual_prompts  # anything else, from any root module

`REPO_ROOT` is the clone this package is installed from: install it editable (`pip install -e .`, which
requirements.txt does).
"""

import sys
from pathlib import Path
from types import ModuleType

from transformers.dynamic_module_utils import get_class_from_dynamic_module


REPO_ROOT = Path(__file__).resolve().parent.parent
AUTO_MAP = {
    "AutoConfig": "configuration_vis_zephyr.VisionZephyrConfig",
    "AutoModel": "modeling_vis_zephyr.VisionZephyrModel",
    "AutoModelForImageTextToText": "modeling_vis_zephyr.VisionZephyrForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_vis_zephyr.VisionZephyrForConditionalGeneration",
}
# Every root file a checkpoint folder needs besides weights and configs.
REMOTE_CODE_FILES = sorted(path.name for path in REPO_ROOT.glob("*.py"))


def load_repo_module(name: str) -> ModuleType:
    """A root remote-code module (e.g. `"visual_prompts"`), imported the way `trust_remote_code` imports it."""
    if not (REPO_ROOT / f"{name}.py").is_file():
        raise FileNotFoundError(
            f"{REPO_ROOT / f'{name}.py'} does not exist: the tools load the remote code of the clone they are "
            "installed from, so install them editable from a clone (pip install -e .)"
        )
    # The loader returns one attribute of the module it imports; the module's `__name__` is its key in sys.modules.
    return sys.modules[get_class_from_dynamic_module(f"{name}.__name__", str(REPO_ROOT))]


def load_repo_class(name: str) -> type:
    """A class of config.json's `auto_map` (e.g. `"VisionZephyrConfig"`), imported as `trust_remote_code` does."""
    reference = next(value for value in AUTO_MAP.values() if value.endswith(f".{name}"))
    module_name, class_name = reference.split(".")
    return getattr(load_repo_module(module_name), class_name)
