"""The numbers in README.md and docs/ against the commands that print them (issues #19, #31).

Runs the commands the docs cite where they take seconds (the accuracy, training and few-row tables,
from the committed docs/*.jsonl; the generator table's parameter counts) and compares their output
with the markdown, so a changed result or a stale doc fails here. Measurements that take minutes
(speed, training) are history: the docs give their date and commit, and a test checks that they do.
The README stays a guide (at most 300 lines, with pictures drawn from the results files), and the
code map in docs/development.md names every module. No network, no ../shared.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ACCURACY = DOCS / "accuracy.md"
TRAINING = DOCS / "training.md"
DEVELOPMENT = DOCS / "development.md"
SHIPPED = ROOT / "models" / "sst2-sentiment" / "config.json"
FIGURES = ROOT / "benchmarks" / "figures.py"
GRID_TABLE = "python benchmarks/accuracy.py table --device cuda --grid prefix-main"
PARAMS = "python benchmarks/params.py"
TABLE_BLOCK = re.compile(r"<!-- table: (.+?) -->\n(.*?)\n<!-- /table -->", re.S)
MEAN_SD = re.compile(r"\d+\.\d\d ± \d+\.\d\d")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
README_LINES = 300


def documents() -> list[Path]:
    """README.md and every page of docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


@functools.cache
def run(command: str) -> str:
    """A `python ...` command as the docs write it, run from the repository root."""
    argv = shlex.split(command)
    assert argv[0] == "python", command
    done = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return done.stdout.rstrip("\n")


def table_blocks(doc: Path) -> list[tuple[str, str]]:
    """(command, markdown) of every `<!-- table: COMMAND -->` block of a page."""
    return TABLE_BLOCK.findall(doc.read_text(encoding="utf-8"))


def tables(markdown: str) -> list[list[list[str]]]:
    """Every markdown table of a text: its rows (the header first, no separator), cells stripped."""
    found, rows = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            found.append(rows)
            rows = []
    return found


def table_headed(markdown: str, first_cells: tuple[str, ...]) -> list[list[str]]:
    matches = [t for t in tables(markdown) if tuple(t[0][: len(first_cells)]) == first_cells]
    assert len(matches) == 1, f"expected one table headed {first_cells}, found {len(matches)}"
    return matches[0]


def plain(cell: str) -> str:
    return cell.replace("**", "").replace("`", "").strip()


@pytest.fixture(scope="module")
def grid_tables() -> tuple[dict, dict]:
    """The main grid's table as the cited command prints it: {(task, method): test cell},
    {method: rotten cell} for the SST-2 runs."""
    out = run(GRID_TABLE)
    main = table_headed(out, ("task", "method"))
    cross = table_headed(out, ("trained on", "method"))
    return {(r[0], r[1]): r[4] for r in main[1:]}, {r[1]: r[4] for r in cross[1:] if r[0] == "sst2"}


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.name)
def test_every_table_block_is_what_its_command_prints(doc):
    for command, block in table_blocks(doc):
        assert block == run(command), f"{doc.name}'s table differs from `{command}`"


def test_the_result_pages_cite_their_table_commands():
    assert len(table_blocks(ACCURACY)) >= 3  # the GPU grid, its sweep, the CPU tables
    assert table_blocks(TRAINING), "docs/training.md cites no table command"


def test_every_mean_and_sd_in_the_docs_is_printed_by_a_cited_table_command():
    printed = "\n".join(run(command) for doc in documents() for command, _ in table_blocks(doc))
    for doc in documents():
        missing = sorted(
            set(MEAN_SD.findall(doc.read_text(encoding="utf-8"))) - set(MEAN_SD.findall(printed))
        )
        assert not missing, f"{doc.name}: no cited table command prints {missing}"


def test_readme_results_table_is_the_grid_table(grid_tables):
    readme = README.read_text(encoding="utf-8")
    assert GRID_TABLE in readme
    test_cells, rotten_cells = grid_tables
    rows = table_headed(readme, ("method", "tuned share", "SST-2 test", "Rotten Tomatoes", "AG News test"))
    assert len(rows) > 3
    for row in rows[1:]:
        name = plain(row[0])
        method = "finetune" if name.startswith("full fine-tuning") else name.split()[0]
        lr = re.search(r"\blr ([0-9.e-]+)\)", name)  # a rate other than the method's default
        method += f" (lr {lr[1]})" if lr else ""
        sst2, rotten, agnews = (plain(c) for c in row[2:5])
        assert sst2 == test_cells[("sst2", method)], f"README SST-2 test of {method}"
        assert rotten == rotten_cells[method], f"README Rotten Tomatoes of {method}"
        assert agnews == test_cells[("agnews", method)], f"README AG News test of {method}"


def test_the_readme_names_the_shipped_task_as_it_is():
    config = json.loads(SHIPPED.read_text(encoding="utf-8"))
    kind, tuned = config["ipt"]["generator"], config["tuned_parameters"]
    share = f"{tuned / config['backbone']['parameters']:.2%}"
    readme = README.read_text(encoding="utf-8")
    assert f"the shipped `{kind}` task" in readme
    assert (
        f"(`models/sst2-sentiment`, `{kind}`, P={config['ipt']['prompt_length']}, {share} of the backbone"
        in readme
    )


def test_dated_results_in_the_docs_name_their_commit():
    """A measurement no test reruns is history: its heading gives the date and the commit."""
    for doc in documents():
        for heading in re.findall(r"^#+ .*\(\d{4}-\d\d-\d\d.*$", doc.read_text(encoding="utf-8"), re.M):
            assert re.search(r"commit [0-9a-f]{7}", heading), f"{doc.name}: {heading!r} names no commit"


@pytest.mark.export
def test_generator_table_counts_are_what_params_prints():
    import torch  # noqa: F401  (benchmarks/params.py builds the models; this test needs the export side)

    training = TRAINING.read_text(encoding="utf-8")
    assert PARAMS in training
    printed = {plain(r[0]): r[1] for r in table_headed(run(PARAMS), ("kind",))[1:]}
    documented = {}
    for row in table_headed(training, ("kind", "prompts come from"))[1:]:
        kinds = re.findall(r"`([a-z-]+)`", row[0])
        counts = [c.strip() for c in row[2].split(" / ")]
        assert len(kinds) == len(counts), row
        documented.update(zip(kinds, counts, strict=True))
    assert documented == printed
    # The README results table's tuned shares are the same counts' shares.
    readme = README.read_text(encoding="utf-8")
    assert PARAMS in readme
    for row in table_headed(readme, ("method", "tuned share"))[1:]:
        name = plain(row[0]).split()[0]
        if name in printed:  # a family of today (the rest are history: fine-tuning, removed kinds)
            assert f"({row[1]})" in printed[name], row


@pytest.mark.export
def test_the_table_commands_default_rates_are_the_trainers():
    import importlib.util

    from ipt_edge_export.model import DEFAULT_LR, GENERATORS

    spec = importlib.util.spec_from_file_location("accuracy_benchmark", ROOT / "benchmarks" / "accuracy.py")
    accuracy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(accuracy)
    assert accuracy.GENERATOR_LR == DEFAULT_LR
    for kind in GENERATORS:  # each family of today is taken for one (not a baseline or a removed kind)
        assert accuracy.default_lr(kind) == DEFAULT_LR, kind


def test_the_code_map_names_every_module():
    code_map = DEVELOPMENT.read_text(encoding="utf-8").split("## Code map", 1)[1].split("\n## ", 1)[0]
    for folder in ("ipt_edge", "export", "benchmarks"):
        for module in sorted((ROOT / folder).glob("*.py")):
            if module.name != "__init__.py":
                assert f"`{folder}/{module.name}`" in code_map or f"`{module.name}`" in code_map, module


def test_the_readme_is_a_guide_that_links_every_page_of_docs():
    readme = README.read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_LINES, f"README.md has {len(readme.splitlines())} lines"
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def test_every_image_the_docs_show_exists():
    for doc in documents():
        for link in IMAGE.findall(doc.read_text(encoding="utf-8")):
            if not link.startswith("http"):
                assert (doc.parent / link).is_file(), f"{doc.name} shows {link}, which does not exist"


def drawn_from_data() -> dict[str, str]:
    """benchmarks/figures.py's FIGURES, read without importing it (no matplotlib here): each image
    drawn from a results file, with that file."""
    for node in ast.parse(FIGURES.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "FIGURES":
            figures = ast.literal_eval(
                ast.Dict(node.value.keys, [ast.Constant(v.elts[1].value) for v in node.value.values])
            )
            return {image: results for image, results in figures.items() if results}
    raise AssertionError("benchmarks/figures.py has no FIGURES table")


def test_the_readme_shows_at_least_three_pictures_drawn_from_the_results():
    shown = {Path(link).name for link in IMAGE.findall(README.read_text(encoding="utf-8"))}
    from_data = sorted(shown & set(drawn_from_data()))
    assert len(from_data) >= 3, f"README.md shows {from_data} of the pictures drawn from results files"


def test_the_figures_draw_the_same_bytes_and_the_learning_curves_once_their_file_exists(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import importlib.util

    spec = importlib.util.spec_from_file_location("figures_script", FIGURES)
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    results = tmp_path / "results"
    results.mkdir()
    for name in set(drawn_from_data().values()) - figures.OPTIONAL:
        (results / name).write_bytes((DOCS / name).read_bytes())
    drawn = figures.draw(results, tmp_path / "a")
    assert "learning-curves.svg" not in drawn
    assert "learning-curves.svg skipped" in capsys.readouterr().out
    runs = [  # two tasks, two methods, sizes, the full set (per_class null), two seeds; extra fields
        {"task": task, "backbone": "all-MiniLM-L6-v2", "method": method, "per_class": size,
         "train_rows": 2 * size if size else 1000, "seed": seed, "test_accuracy": 0.5 + (size or 64) / 200,
         "steps": 300}
        for task in ("sst2", "agnews") for method in ("attn-prefix", "probe")
        for size in (8, 16, 32, None) for seed in (0, 1)
    ]  # fmt: skip
    (results / "learning-curves.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    assert "learning-curves.svg" in figures.draw(results, tmp_path / "b")
    figures.draw(results, tmp_path / "c")
    for image in (tmp_path / "b").iterdir():
        assert image.read_bytes() == (tmp_path / "c" / image.name).read_bytes(), image.name
        if (tmp_path / "a" / image.name).exists():
            assert image.read_bytes() == (tmp_path / "a" / image.name).read_bytes(), image.name
