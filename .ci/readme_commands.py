"""Print one of the README's "Two commands", verbatim, so CI runs exactly what a newcomer copies.

    python .ci/readme_commands.py 1   -> the main job (install, export, score, predict)
    python .ci/readme_commands.py 2   -> the tests

The commands are the first ```bash block under "## Two commands", each introduced by a comment
line "# N. ..."; comment lines are dropped, continuation lines kept as written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def commands() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Two commands\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    found: dict[str, list[str]] = {}
    current = None
    for line in block.splitlines():
        number = re.match(r"# (\d+)\. ", line)
        if number:
            current = number.group(1)
            found[current] = []
        elif current and line.strip() and not line.lstrip().startswith("#"):
            found[current].append(line)
    return {n: "\n".join(lines) for n, lines in found.items()}


if __name__ == "__main__":
    print(commands()[sys.argv[1]])
