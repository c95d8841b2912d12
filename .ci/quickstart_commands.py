"""Prints the README's Quickstart commands, one per line, exactly as written (CI runs them verbatim)."""

import re
import sys
from pathlib import Path


README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_commands(readme: str) -> list[str]:
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


if __name__ == "__main__":
    commands = quickstart_commands(README.read_text())
    if len(commands) != 2 or any("\n" in command for command in commands):
        sys.exit(f"README.md's Quickstart must hold two one-line bash commands, found {commands}")
    print("\n".join(commands))
