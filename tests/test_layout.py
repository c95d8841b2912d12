"""The layout holds: the tools are one package that finds the root's remote code one way, and no code edits the import
path (a merged tool that does would work only from some working directories)."""

import re
import subprocess
from pathlib import Path

from vision_zephyr_tools.remote_code import REPO_ROOT


IMPORT_PATH_EDIT = re.compile(r"sys\.path|PYTHONPATH|site\.addsitedir")


def repository_python_files() -> list[Path]:
    """The repository's Python files as git sees them (tracked, or new and not ignored): virtual environments such as
    CI's `.venv-floor/`, build outputs and caches are ignored by `.gitignore`, not by a list kept here."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [REPO_ROOT / name for name in listed if (REPO_ROOT / name).is_file()]


def test_no_code_edits_the_import_path():
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in repository_python_files()
        if path != Path(__file__)  # the pattern above
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if IMPORT_PATH_EDIT.search(line)
    ]
    assert not offenders, f"load the package or the remote code (vision_zephyr_tools.remote_code) instead: {offenders}"


def test_python_outside_the_package_is_only_the_hub_files_and_the_known_folders():
    # New tools belong in vision_zephyr_tools/ (a command in cli.py), not in a new folder of scripts.
    folders = {path.relative_to(REPO_ROOT).parts[0] for path in repository_python_files() if path.parent != REPO_ROOT}
    assert folders <= {
        "vision_zephyr_tools",
        "tests",
        "benchmarks",
        "research",
        "space",
        "demo",
        ".ci",
        "serving_tests",
    }, sorted(folders)
