"""Import hygiene of the remote code: what `trust_remote_code` requires, and the transformers version guard."""

import importlib.metadata
import importlib.util
import re
import sys

import pytest
import transformers
from conftest import REPO_ROOT
from transformers.dynamic_module_utils import check_imports, get_imports


# handler.py is the Inference Endpoints entry point, not remote code: nothing imports it through trust_remote_code.
ROOT_MODULES = sorted(path for path in REPO_ROOT.glob("*.py") if path.name != "handler.py")
# Every third-party package the remote code imports; `check_imports` makes users install exactly these.
REQUIRED_PACKAGES = {"PIL", "huggingface_hub", "numpy", "torch", "transformers"}
# Optional heavy dependencies that broke other remote-code VLMs when imported unguarded.
OPTIONAL_PACKAGES = {"flash_attn", "torchvision", "scipy", "shapely", "timm", "cv2", "kernels", "accelerate"}


def third_party_imports(path) -> set[str]:
    return {name for name in get_imports(path) if name not in sys.stdlib_module_names}


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def pinned_distributions() -> set[str]:
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    return {normalized(re.split(r"[=<>!~\[ ]", line)[0]) for line in lines if line and not line.startswith(("#", "-"))}


def test_root_modules_are_the_remote_code_files():
    names = [path.name for path in ROOT_MODULES]
    assert names == [
        "configuration_vis_zephyr.py",
        "image_processing_anyres.py",
        "modeling_vis_zephyr.py",
        "processing_vis_zephyr.py",
        "visual_prompts.py",
    ], "a new root .py file is fetched by trust_remote_code: add it here once its imports are checked"


def test_remote_code_requires_exactly_the_declared_packages():
    required = set().union(*(third_party_imports(path) for path in ROOT_MODULES))
    assert required == REQUIRED_PACKAGES, f"check_imports would require {sorted(required)}"


@pytest.mark.parametrize("path", ROOT_MODULES, ids=lambda path: path.name)
def test_no_optional_package_is_imported_unguarded(path):
    unguarded = third_party_imports(path) & OPTIONAL_PACKAGES
    assert not unguarded, f"{path.name} imports {sorted(unguarded)} outside a try/is_*_available() guard"


@pytest.mark.parametrize("path", ROOT_MODULES, ids=lambda path: path.name)
def test_check_imports_passes_and_relative_imports_are_root_files(path):
    relative_imports = check_imports(path)
    missing = [name for name in relative_imports if not (REPO_ROOT / f"{name}.py").is_file()]
    assert not missing, f"{path.name} imports {missing} relatively, which are not root files"


def test_every_required_package_is_pinned_in_requirements():
    distributions = importlib.metadata.packages_distributions()
    pinned = pinned_distributions()
    unpinned = {
        package: distributions[package]
        for package in REQUIRED_PACKAGES
        if not {normalized(name) for name in distributions[package]} & pinned
    }
    assert not unpinned, f"required by the remote code but not in requirements.txt: {unpinned}"


def test_check_imports_sees_imports_inside_functions_but_not_guarded_ones(tmp_path):
    # The premise of the tests above: a lazy import in a function body still counts, a guarded one does not.
    module = tmp_path / "module.py"
    module.write_text(
        "def attention():\n"
        "    import flash_attn\n"
        "try:\n"
        "    import timm\n"
        "except ImportError:\n"
        "    timm = None\n"
        "from transformers.utils import is_scipy_available\n"
        "if is_scipy_available():\n"
        "    import scipy\n"
    )
    assert third_party_imports(module) == {"flash_attn", "transformers"}


# Version guard


@pytest.mark.parametrize("version", ["5.19.0", "5.20.1", "5.23.0", "5.24.0.dev0", "6.0.0"])
def test_supported_transformers_versions_pass_the_guard(repo_class, version):
    check_transformers_version = sys.modules[repo_class("VisionZephyrConfig").__module__].check_transformers_version
    check_transformers_version(version)


@pytest.mark.parametrize("version", ["5.18.2", "5.0.0", "4.57.1", "4.9.0", "unknown"])
def test_older_transformers_versions_fail_the_guard_naming_both_versions(repo_class, version):
    check_transformers_version = sys.modules[repo_class("VisionZephyrConfig").__module__].check_transformers_version
    with pytest.raises(ImportError, match=rf"needs transformers>=5\.19, but transformers {re.escape(version)} is"):
        check_transformers_version(version)


def test_configuration_module_refuses_to_import_on_an_older_transformers(monkeypatch):
    monkeypatch.setattr(transformers, "__version__", "5.18.0")
    spec = importlib.util.spec_from_file_location(
        "configuration_vis_zephyr_on_old_transformers", REPO_ROOT / "configuration_vis_zephyr.py"
    )
    with pytest.raises(ImportError, match=r"needs transformers>=5\.19, but transformers 5\.18\.0 is installed"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
