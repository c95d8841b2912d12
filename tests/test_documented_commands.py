"""Every command of ours that the documentation shows exists as written: docs cannot name a moved or removed tool.

Commands are read from the code blocks and the inline code of README.md, docs/*.md, space/README.md and BENCHMARKS.md:
`vision-zephyr COMMAND ...`, `python -m MODULE ...` (also after `accelerate launch` / `torchrun`) and
`python PATH.py ...`. Each one's `--help` must work (after the positional words it starts with, so `vision-zephyr
evaluate vcr` shows the `vcr` options), and every `--flag` it passes must be in that help. The exception is
BENCHMARKS.md, whose older runs are recorded with the flags of their day (it says so): there only the program must
exist. The `vision-zephyr` command itself and the Quickstart's chat command run as a user runs them, in a subprocess.
"""

import functools
import importlib
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import load_script

from vision_zephyr_tools import cli
from vision_zephyr_tools.remote_code import REPO_ROOT


DOCUMENTS = sorted(
    [REPO_ROOT / "README.md", REPO_ROOT / "BENCHMARKS.md", REPO_ROOT / "space" / "README.md"]
    + list((REPO_ROOT / "docs").glob("*.md"))
)
FLAGS_OF_THEIR_DAY = {REPO_ROOT / "BENCHMARKS.md"}
FENCED_BLOCK = re.compile(r"^```[a-z]*\n(.*?)^```$", re.DOTALL | re.MULTILINE)
INDENTED_CODE = re.compile(r"^ {4}(\S.*)$", re.MULTILINE)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
PYTHON = re.compile(r"^(.*/)?python3?$")
LAUNCHERS = {"accelerate", "torchrun"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$")  # COMMAND, OUT_DIR, ...
CONSOLE_SCRIPT = Path(sys.executable).with_name("vision-zephyr")
QUICKSTART_CHAT = re.compile(r"\.venv/bin/vision-zephyr chat [^\n]*")


@dataclass(frozen=True)
class Invocation:
    """What runs: a `vision-zephyr` command, a module (`python -m`) or a script file, with its leading positionals."""

    kind: str  # "command", "module" or "script"
    name: str
    leading: tuple[str, ...] = ()

    def __str__(self) -> str:
        return " ".join(
            [{"command": "vision-zephyr", "module": "-m", "script": "python"}[self.kind], self.name, *self.leading]
        )


@dataclass(frozen=True)
class Documented:
    invocation: Invocation
    flags: tuple[str, ...]
    source: str  # file:line


def command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) of every code-block line (continuations joined) and every inline code span."""
    lines = []
    for block in FENCED_BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        lines += [(first_line + index, line) for index, line in enumerate(block.group(1).splitlines())]
    prose = FENCED_BLOCK.sub(lambda block: "\n" * block.group(0).count("\n"), text)
    for pattern in (INDENTED_CODE, INLINE_CODE):
        lines += [(prose.count("\n", 0, match.start()) + 1, match.group(1)) for match in pattern.finditer(prose)]
    joined = []
    for line_number, line in sorted(lines):
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line)
        else:
            joined.append((line_number, line))
    return joined


def invocation_of(words: list[str]) -> tuple[Invocation, list[str]] | None:
    """The program of ours that a shell command runs, and its arguments; `None` for anything else."""
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
        words = words[1:]
    if not words:
        return None
    if words[0].endswith("vision-zephyr"):
        command = words[1] if len(words) > 1 and not words[1].startswith("-") else ""
        return Invocation("command", "" if PLACEHOLDER.match(command) else command), words[2:] if command else words[
            1:
        ]
    if PYTHON.match(words[0]) or words[0] in LAUNCHERS:
        if "-m" in words[:-1]:
            module = words[words.index("-m") + 1]
            if module.split(".")[0] != "vision_zephyr_tools":
                return None
            return Invocation("module", module), words[words.index("-m") + 2 :]
        scripts = [word for word in words if word.endswith(".py")]
        if scripts:
            return Invocation("script", scripts[0]), words[words.index(scripts[0]) + 1 :]
    return None


def documented_commands() -> list[Documented]:
    found = []
    for document in DOCUMENTS:
        for line_number, line in command_lines(document.read_text()):
            for part in line.split("&&"):
                try:
                    words = shlex.split(part, comments=True)
                except ValueError:  # prose in backticks, not a command
                    continue
                parsed = invocation_of(words)
                if parsed is None:
                    continue
                invocation, arguments = parsed
                if invocation.name:  # `vision-zephyr evaluate vcr ...`: the help of `evaluate vcr`
                    first_flag = next((i for i, word in enumerate(arguments) if word.startswith(("-", "["))), None)
                    invocation = Invocation(invocation.kind, invocation.name, tuple(arguments[:first_flag]))
                flags = [word.strip("[]").split("=")[0] for word in arguments if word.strip("[]").startswith("--")]
                if document in FLAGS_OF_THEIR_DAY:
                    flags, invocation = [], Invocation(invocation.kind, invocation.name)
                where = f"{document.relative_to(REPO_ROOT)}:{line_number}"
                found.append(Documented(invocation, tuple(flag for flag in flags if flag != "--"), where))
    return found


DOCUMENTED = documented_commands()
# Every documented invocation, and every command of `vision-zephyr` whether documented or not.
INVOCATIONS = sorted(
    {entry.invocation for entry in DOCUMENTED} | {Invocation("command", name) for name in ["", *cli.COMMANDS]},
    key=str,
)


def help_text(invocation: Invocation, monkeypatch, capsys) -> str:
    """The invocation's `--help`, run in this process (one import of torch for all of them)."""
    arguments = [*invocation.leading, "--help"]
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # restored afterwards: the command sets it for its tool
    if invocation.kind == "command":
        run = functools.partial(cli.main, [invocation.name, *arguments] if invocation.name else arguments)
    else:
        if invocation.kind == "module":
            module = importlib.import_module(invocation.name)
        else:
            path = REPO_ROOT / invocation.name
            assert path.is_file(), f"{invocation.name} does not exist"
            module = load_script(path)
        monkeypatch.setattr(sys, "argv", [invocation.name, *arguments])
        run = module.main
    with pytest.raises(SystemExit) as exit_info:
        run()
    output = capsys.readouterr()
    assert exit_info.value.code in (0, None), f"`{invocation} --help` failed:\n{output.err}"
    return output.out


def test_commands_are_found_where_the_documentation_shows_them():
    # Guards the extraction itself: a few commands known to be documented, of each kind.
    sources = {(entry.invocation.kind, entry.invocation.name, entry.source.split(":")[0]) for entry in DOCUMENTED}
    for expected in [
        ("command", "chat", "README.md"),
        ("command", "convert", "docs/conversion.md"),
        ("command", "evaluate", "docs/training.md"),
        ("module", "vision_zephyr_tools.training.train", "docs/training.md"),
        ("command", "train-demo", "BENCHMARKS.md"),
        ("script", "benchmarks/bench_processor.py", "BENCHMARKS.md"),
        ("script", "research/demo_recipe_sweep.py", "BENCHMARKS.md"),
        ("script", "space/app.py", "space/README.md"),
    ]:
        assert expected in sources, f"{expected} not found among {sorted(sources)}"


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=str)
def test_documented_command_has_help_that_names_its_documented_flags(invocation, monkeypatch, capsys):
    if invocation.name == "space/app.py":
        pytest.importorskip(
            "gradio", reason="the web demo needs gradio (install requirements-web.txt as the README says)"
        )
    text = help_text(invocation, monkeypatch, capsys)
    assert "usage:" in text, text
    for entry in DOCUMENTED:
        if entry.invocation == invocation:
            unknown = [flag for flag in entry.flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)]
            assert not unknown, f"{entry.source}: `{invocation}` has no {unknown}"


def test_vision_zephyr_command_is_installed_and_lists_every_command():
    assert CONSOLE_SCRIPT.exists(), (
        f"{CONSOLE_SCRIPT} is missing: install the package (pip install -r requirements.txt)"
    )
    result = subprocess.run([str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(f"  {name} " in result.stdout for name in cli.COMMANDS), result.stdout


def test_quickstart_chat_command_answers():
    readme = (REPO_ROOT / "README.md").read_text()
    command = QUICKSTART_CHAT.search(readme)
    assert command, "README.md's Quickstart no longer runs `.venv/bin/vision-zephyr chat ...`"
    words = shlex.split(command.group(0))
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), *words[1:]], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the Quickstart's chat command printed no answer"
