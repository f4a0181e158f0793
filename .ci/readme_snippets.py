"""Run README.md's code snippets as a reader would after its first command (.ci/run, step 5).

Every fenced block in README.md but a ```text one (outputs, diagrams, synopses) carries a marker,
an HTML comment among the comment lines just above its fence:

    <!-- snippet: run -->                run it here, from the repository root
    <!-- snippet: not run: REASON -->    not run here; REASON says why, and what runs it instead

A block without one fails this script, so a new snippet is run or says why it is not. Python runs
in this interpreter's environment (in CI, the README's .venv) and a line `EXPRESSION  # VALUE`
whose VALUE is a Python literal also checks that the expression is equal to it, so what the README
says a call returns is what it returns; bash runs as `bash -euo pipefail`, and every bash block,
run or not, is parsed (`bash -n`).

    python .ci/readme_snippets.py          check the markers, run the snippets
    python .ci/readme_snippets.py --list   print each snippet's line, language and marker
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- snippet: (run|not run: .+?) -->")
NOT_SNIPPETS = {"text"}


@dataclass
class Snippet:
    line: int  # README.md's line of the block's first line (after the fence)
    language: str
    marker: str  # "run" or "not run: REASON"
    source: str


def snippets(text: str) -> list[Snippet]:
    """Every fenced block but ```text ones, with its marker; a block without one is an error."""
    lines = text.splitlines()
    found, errors, n = [], [], 0
    while n < len(lines):
        fence = re.fullmatch(r"```(\w*)\s*", lines[n])
        if not fence:
            n += 1
            continue
        end = next(k for k in range(n + 1, len(lines)) if lines[k].startswith("```"))
        language, above = fence.group(1), n - 1
        markers = []
        while above >= 0 and lines[above].startswith("<!--"):  # the comment lines just above
            markers += MARKER.findall(lines[above])
            above -= 1
        if language not in NOT_SNIPPETS:
            if len(markers) != 1:
                errors.append(
                    f"README.md:{n + 1}: a ```{language} block needs one <!-- snippet: ... --> line above it"
                )
            else:
                found.append(Snippet(n + 2, language, markers[0], "\n".join(lines[n + 1 : end]) + "\n"))
        n = end + 1
    if errors:
        sys.exit("\n".join(errors))
    return found


def checked(snippet: Snippet) -> str:
    """The Python snippet with each one-line `EXPRESSION  # VALUE`, VALUE a literal, asserting it."""
    comments = {
        token.start[0]: token.string[1:].strip()
        for token in tokenize.generate_tokens(io.StringIO(snippet.source).readline)
        if token.type == tokenize.COMMENT
    }
    lines = snippet.source.splitlines()
    for node in ast.parse(snippet.source).body:
        comment = comments.get(node.lineno)
        if not isinstance(node, ast.Expr) or node.end_lineno != node.lineno or comment is None:
            continue
        try:
            ast.literal_eval(comment)
        except (ValueError, TypeError, SyntaxError):
            continue  # prose about the value, not the value
        expression = ast.get_source_segment(snippet.source, node.value)
        where = f"README.md:{snippet.line + node.lineno - 1}: {expression} is "
        # One line for one line, so a traceback's line number stays the README's.
        lines[node.lineno - 1] = (
            f"_shown = {expression}; assert _shown == {comment}, {where!r} + repr(_shown)"
        )
    return "\n".join(lines) + "\n"


def command(snippet: Snippet) -> list[str]:
    if snippet.language == "python":
        # Blank lines in front, so tracebacks ('File "<string>", line N') give README.md's line.
        return [sys.executable, "-c", "\n" * (snippet.line - 1) + checked(snippet)]
    if snippet.language == "bash":
        return ["bash", "-euo", "pipefail", "-c", snippet.source]
    sys.exit(f"README.md:{snippet.line}: no way to run a ```{snippet.language} block here; mark it not run")


def main() -> None:
    found = snippets(README.read_text(encoding="utf-8"))
    if sys.argv[1:] == ["--list"]:
        for snippet in found:
            print(f"README.md:{snippet.line}  {snippet.language:8} {snippet.marker}")
        return
    for snippet in found:
        if snippet.language == "bash":  # a broken line continuation or quote, even where not run
            parsed = subprocess.run(["bash", "-n", "-c", snippet.source], capture_output=True, text=True)
            if parsed.returncode:
                sys.exit(f"README.md:{snippet.line}: bash cannot parse this block\n{parsed.stderr}")
    for snippet in found:
        if snippet.marker != "run":
            continue
        print(f"-- README.md:{snippet.line} ({snippet.language})", flush=True)
        start = time.monotonic()
        if subprocess.run(command(snippet), cwd=ROOT).returncode:
            sys.exit(
                f"README.md:{snippet.line}: the {snippet.language} snippet failed (line numbers are README.md's)"
            )
        print(f"   ok in {time.monotonic() - start:.1f} s", flush=True)
    skipped = sum(snippet.marker != "run" for snippet in found)
    print(f"readme_snippets: {len(found) - skipped} run, {skipped} not run (each says why)")


if __name__ == "__main__":
    main()
