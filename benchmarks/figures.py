"""The figures of README.md and docs/, drawn from the committed results files only (issue #31).

    pip install ".[docs]"                       # matplotlib, pinned exactly
    python benchmarks/figures.py                # draw docs/images/*.svg
    python benchmarks/figures.py --check        # redraw into a temporary folder; fail, naming the
                                                # image, where a committed one differs (CI, step 5)

What each image shows, and the file it reads (docs/ unless --results says otherwise):

    dataflow.svg                   the runtime's path from text to probabilities (no data: a diagram)
    accuracy-vs-tuned-share.svg    test accuracy against the share of the backbone tuned, per method:
                                   the GPU grid of docs/accuracy.md (accuracy-results.jsonl, the runs
                                   of benchmarks/grids/prefix-main.jsonl, each method at the rate the
                                   SST-2 sweep chose on dev, as `benchmarks/accuracy.py grid --lr-from`
                                   did), mean ± sd over 3 seeds
    training-speed-vs-accuracy.svg test accuracy against training rows/s, per backbone and precision
                                   (train-speed.jsonl, benchmarks/train_speed.py's runs)
    mpnet-tasks.svg                every task on all-mpnet-base-v2 at the CPU's subsample budget, per
                                   method (accuracy-mpnet-cpu.jsonl)
    learning-curves.svg            test accuracy against labelled rows per class, per method and task
                                   (learning-curves.jsonl: one record per run with task, backbone,
                                   method, per_class (null: the full training set), train_rows, seed,
                                   test_accuracy); skipped, with a note, while that file does not exist

Scoring speed (rows/s of `ipt-edge score` and bench.py) is recorded only in the markdown of
docs/performance.md (bench.py writes its raw rounds to work/, which is not committed), so no figure
draws it.

The SVG is deterministic: matplotlib's defaults (no user matplotlibrc), a fixed id salt, no date,
text as paths in the bundled DejaVu Sans, and matplotlib pinned in the `docs` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import matplotlib
from train_speed import group_runs

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import font_manager
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # (benchmarks/accuracy.py: which runs a grid holds, and their labels)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs"
IMAGES = ROOT / "docs" / "images"

BLUE, ORANGE, GREEN, RED, GREY, BLACK = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#8c8c8c", "#222222"
SHARED, PER_TASK, DATA = "#dbe9f6", "#fde5cc", "#f2f2f2"
TASK_NAMES = {"sst2": "SST-2", "agnews": "AG News", "rte": "RTE", "cb": "CB", "boolq": "BoolQ",
              "mrpc": "MRPC", "wic": "WiC", "emotion": "emotion", "trec": "TREC"}  # fmt: skip


def style() -> None:
    """matplotlib's defaults whatever the user's matplotlibrc says, and deterministic SVG: text is
    drawn as paths from the fonts matplotlib ships, never from a font the system has installed
    under the same name (a different version draws other paths)."""
    matplotlib.rcdefaults()
    bundled = str(Path(matplotlib.get_data_path(), "fonts"))
    manager = font_manager.fontManager
    manager.ttflist = [f for f in manager.ttflist if f.fname.startswith(bundled)]
    manager.afmlist = [f for f in manager.afmlist if f.fname.startswith(bundled)]
    plt.rcParams.update(
        {
            "svg.hashsalt": "ipt-edge",
            "svg.fonttype": "path",
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.frameon": False,
        }
    )
    used = font_manager.findfont("DejaVu Sans", fallback_to_default=False)
    assert used.startswith(bundled), f"DejaVu Sans resolves to {used}, not matplotlib's own"


def save(figure, path: Path) -> None:
    figure.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    plt.close(figure)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# -- the runtime's data flow -----------------------------------------------------------------------


def dataflow(results: Path, out: Path) -> None:
    """Boxes and arrows: what runs per bundle (shared) and per task, and what passes between them."""
    figure, ax = plt.subplots(figsize=(11, 3.8))
    ax.set_xlim(-1, 112)
    ax.set_ylim(-4, 36)
    ax.axis("off")

    def box(x, y, w, h, text, color, bold=False):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.4,rounding_size=1.2",
                                    facecolor=color, edgecolor="#555555", linewidth=1))  # fmt: skip
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5,
                fontweight="bold" if bold else "normal")  # fmt: skip

    def arrow(start, end, text="", ha="center", va="bottom", offset=(0.0, 1.0)):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, color="#444444",
                                     linewidth=1, shrinkA=0, shrinkB=0))  # fmt: skip
        if text:
            x, y = (start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1]
            ax.text(x, y, text, ha=ha, va=va, fontsize=7, color="#333333")

    top, low, h = 24, 4, 8
    mid = top + h / 2
    box(0, top, 7, h, "texts", DATA)
    box(12, top, 13, h, "tokenizer\ntokenizer.json", SHARED, True)
    box(36, top, 13, h, "embedding\nembed.onnx", SHARED, True)
    box(64, top, 16, h, "backbone\nencoder.onnx\n(shared, frozen)", SHARED, True)
    box(91, top, 11, h, "pool + head\n(per task)", PER_TASK, True)
    box(36, low, 13, h, "generator\ngenerator.onnx\n(per task)", PER_TASK, True)
    box(64, low, 16, h, "prefix keys/values\nprefix_kv.0 … L−1", DATA)
    ax.text(105, mid, "labels,\nprobabilities", ha="left", va="center", fontsize=8)

    arrow((7.8, mid), (11.2, mid))
    arrow((25.8, mid), (35.2, mid), "input_ids,\nattention_mask\n[B,T]")
    arrow((49.8, mid), (63.2, mid), "token_embeds\n[B,T,H]")
    arrow((80.8, mid), (90.2, mid), "hidden\n[B,T,H]")
    arrow((102.8, mid), (104.5, mid))
    arrow((42.5, top - 0.8), (42.5, low + h + 0.8), "token_embeds,\ninput_ids, mask", ha="left", va="center",
          offset=(1.2, 0))  # fmt: skip
    arrow((49.8, low + h / 2), (63.2, low + h / 2), "P prefix slots\nper layer", offset=(0, 0.8))
    arrow((72, low + h + 0.8), (72, top - 0.8), "each layer's attention reads\nits P keys and values\n"
          "in front of the text's own", ha="left", va="center", offset=(1.2, 0))  # fmt: skip

    ax.add_patch(
        FancyBboxPatch((0, 0.2), 2.4, 1.6, boxstyle="round,pad=0.2", facecolor=SHARED, edgecolor="#555555")
    )
    ax.text(3.4, 1, "one copy per bundle, shared by every task", va="center", fontsize=7.5)
    ax.add_patch(
        FancyBboxPatch((0, -2.8), 2.4, 1.6, boxstyle="round,pad=0.2", facecolor=PER_TASK, edgecolor="#555555")
    )
    ax.text(3.4, -2, "one per task (about a megabyte)", va="center", fontsize=7.5)
    save(figure, out)


# -- accuracy against tuned share --------------------------------------------------------------------


def chosen_rates(runs: list[dict]) -> dict[str, float]:
    """Per method, the rate with the best mean dev accuracy in the SST-2 sweep (P=16, from layer 0):
    accuracy.best_lrs on the sweep's runs, as the main grid was run with --lr-from."""
    sweep = [job for grid in ("prefix-sweep", "prefix-sweep-high-lr") for job in accuracy.grid_jobs(grid)]
    dev: dict[str, dict[float, list[float]]] = {}
    for r in runs:
        if r.get("device") != "cuda" or not any(accuracy.from_job(r, job) for job in sweep):
            continue
        if r.get("prompt_length", 16) != 16 or r.get("prefix_from_layer"):
            continue
        dev.setdefault(r["method"], {}).setdefault(r["lr"], []).append(r["dev_accuracy"])
    return {m: max(lrs, key=lambda lr: statistics.mean(lrs[lr])) for m, lrs in dev.items()}


def method_style(method: str) -> dict:
    if method == "finetune":
        return {"color": BLACK, "marker": "s", "label": "full fine-tuning"}
    if method == "probe":
        return {"color": GREY, "marker": "v", "label": "linear probe"}
    if method == "prefix":
        return {"color": BLUE, "marker": "o", "label": "static prefix (P-tuning v2)"}
    if method.endswith("-prefix"):
        return {"color": ORANGE, "marker": "D", "label": "instance-wise prefix (IPT)"}
    return {"color": GREY, "marker": "o", "mfc": "white", "label": "prepended prompts (kinds since removed)"}


def accuracy_vs_tuned_share(results: Path, out: Path) -> None:
    runs = [r for r in read_jsonl(results / "accuracy-results.jsonl") if "error" not in r]
    rates = chosen_rates(runs)
    main = accuracy.grid_jobs("prefix-main")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        if r.get("device") != "cuda" or not any(accuracy.from_job(r, job) for job in main):
            continue
        if r["method"] in rates and r["lr"] != rates[r["method"]]:
            continue  # the other rate of the same method: the table's "(lr ...)" rows
        groups.setdefault((r["task"], r["method"]), []).append(r)
    tasks = ["sst2", "agnews"]
    figure, axes = plt.subplots(1, len(tasks), figsize=(10, 3.9), sharex=True)
    shown: dict[str, object] = {}
    for ax, task in zip(axes, tasks, strict=True):
        for (t, method), rs in sorted(groups.items()):
            if t != task:
                continue
            share = 100 * statistics.mean(r["tuned_share"] for r in rs)
            mean, sd = mean_sd([100 * r["test_accuracy"] for r in rs])
            s = method_style(method)
            handle = ax.errorbar(share, mean, yerr=sd, fmt=s["marker"], color=s["color"],
                                 mfc=s.get("mfc", s["color"]), ms=6, capsize=3)  # fmt: skip
            shown.setdefault(s["label"], handle)
            ax.annotate(accuracy.label(rs[0]), (share, mean), xytext=(6, -3), textcoords="offset points",
                        fontsize=7.5, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.85}, zorder=1.5)  # fmt: skip
        rows = next(r["train_rows"] for (t, _), rs in groups.items() if t == task for r in rs)
        ax.set_title(f"{TASK_NAMES[task]} ({rows:,} training rows × 1 epoch)", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlim(0.1, 400)
        ax.set_xticks([0.1, 0.3, 1, 3, 10, 100], ["0.1%", "0.3%", "1%", "3%", "10%", "100%"])
        ax.set_xlabel("share of the backbone's parameters tuned (log scale)")
    axes[0].set_ylabel("test accuracy, % (mean ± sd, 3 seeds)")
    figure.legend(shown.values(), shown.keys(), loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.06))
    figure.suptitle("all-MiniLM-L6-v2, full training sets, trained on one GPU (docs/accuracy-results.jsonl)",
                    fontsize=9)  # fmt: skip
    save(figure, out)


# -- accuracy against training speed -----------------------------------------------------------------

CONFIG_STYLE = {
    "legacy": {"marker": "o", "mfc": "white", "label": "the loop before issue #28 (fp32)"},
    "fp32": {"marker": "s", "label": "bucketed batches, fp32"},
    "bf16": {"marker": "D", "label": "bucketed batches, bf16 backbone (default)"},
}


def training_speed_vs_accuracy(results: Path, out: Path) -> None:
    groups = group_runs(read_jsonl(results / "train-speed.jsonl"))  # as train_speed.py's table
    tasks = [t for t in ("sst2", "agnews") if any(k[0] == t for k in groups)]
    figure, axes = plt.subplots(1, len(tasks), figsize=(10, 3.9))
    shown: dict[str, object] = {}
    for s in CONFIG_STYLE.values():  # the markers' legend, in grey
        shown[s["label"]] = axes[0].errorbar([], [], fmt=s["marker"], color=GREY, mfc=s.get("mfc", GREY))
    for ax, task in zip(axes, tasks, strict=True):
        speeds = []
        mine = [(key, configs) for key, configs in sorted(groups.items()) if key[0] == task]
        for n, ((_, backbone, rows, epochs, _, lr), configs) in enumerate(mine):
            color = (RED, GREEN)[n % 2] if "mpnet" in backbone else (BLUE, "#17becf", "#9467bd")[n % 3]
            points = []
            for config in [c for c in CONFIG_STYLE if c in configs]:
                rs = configs[config]
                timed = [r for r in rs if not r.get("contended")] or rs  # rows/s of quiet runs only
                speed = statistics.mean(r["rows_per_second"] for r in timed)
                mean, sd = mean_sd([100 * r["test_accuracy"] for r in rs])
                s = CONFIG_STYLE[config]
                ax.errorbar(speed, mean, yerr=sd, fmt=s["marker"], color=color, mfc=s.get("mfc", color), ms=6,
                            capsize=3)  # fmt: skip
                points.append((speed, mean))
                speeds.append(speed)
            (line,) = ax.plot(*zip(*points, strict=True), color=color, linewidth=0.8)
            seeds = [len(configs[c]) for c in CONFIG_STYLE if c in configs]
            name = f"{TASK_NAMES[task]}, {backbone}, {rows:,} rows × {epochs:g}, lr {lr:g}"
            if len(set(seeds)) > 1:
                name += f", seeds {'/'.join(map(str, seeds))}"
            elif seeds[0] > 1:
                name += f", {seeds[0]} seeds"
            shown[name] = line
        ax.set_title(TASK_NAMES[task], fontsize=9)
        ax.set_xscale("log")
        ax.set_xlim(min(speeds) / 1.5, max(speeds) * 1.5)
        ticks = [
            t for t in (5, 10, 20, 30, 50, 100, 200, 300, 500) if min(speeds) / 1.5 <= t <= max(speeds) * 1.5
        ]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        bottom, top = ax.get_ylim()
        if top - bottom < 3:  # at least 3 points of accuracy, so that a 0.2-point gap looks like one
            centre = (top + bottom) / 2
            ax.set_ylim(centre - 1.5, centre + 1.5)
        ax.set_xlabel("training rows/s on 2 CPU cores (log scale)")
    axes[0].set_ylabel("test accuracy, % (mean ± sd where seeds > 1)")
    figure.legend(
        shown.values(), shown.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8
    )
    figure.suptitle("What training costs, and what it gives (docs/train-speed.jsonl)", fontsize=9)
    save(figure, out)


# -- every task on MPNet --------------------------------------------------------------------------------

MPNET_METHODS = {
    "attn-prefix": {"color": ORANGE, "marker": "D", "label": "attn-prefix (instance-wise)"},
    "prefix": {"color": BLUE, "marker": "o", "label": "prefix (static)"},
    "finetune": {"color": BLACK, "marker": "s", "label": "full fine-tuning"},
    "probe": {"color": GREY, "marker": "v", "label": "linear probe"},
}


def mpnet_tasks(results: Path, out: Path) -> None:
    runs = read_jsonl(results / "accuracy-mpnet-cpu.jsonl")
    groups: dict[tuple, dict[str, list[float]]] = {}
    for r in runs:
        if "error" in r:
            continue
        key = (r["task"], r["train_rows"], r["epochs"])
        groups.setdefault(key, {}).setdefault(r["method"], []).append(100 * r["test_accuracy"])
    order = sorted(groups, key=lambda k: (k[0], k[1]))
    figure, ax = plt.subplots(figsize=(8, 0.42 * len(order) + 1.4))
    shown: dict[str, object] = {}
    for y, key in enumerate(reversed(order)):
        for n, (method, s) in enumerate(MPNET_METHODS.items()):
            values = groups[key].get(method)
            if not values:
                continue
            offset = (n - 1.5) * 0.12
            ax.scatter(
                values, [y + offset] * len(values), color=s["color"], marker=s["marker"], s=10, alpha=0.35
            )
            handle = ax.scatter(
                [statistics.mean(values)], [y + offset], color=s["color"], marker=s["marker"], s=36
            )
            shown.setdefault(s["label"], handle)
    ax.set_yticks(range(len(order)),
                  [f"{TASK_NAMES[t]} ({rows:,} × {epochs:g})" for t, rows, epochs in reversed(order)])  # fmt: skip
    ax.set_xlabel("test accuracy, % (large marker: mean over seeds; small: each seed)")
    ax.grid(axis="y", alpha=0)
    figure.legend(shown.values(), shown.keys(), loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.04))
    figure.suptitle("all-mpnet-base-v2 on CPU, a subsample budget: training rows × epochs per task\n"
                    "(docs/accuracy-mpnet-cpu.jsonl)", fontsize=9)  # fmt: skip
    save(figure, out)


# -- learning curves -------------------------------------------------------------------------------


# The methods issue #29 asks the curves to compare. The JSONL also holds the default's variants
# (cross-entropy, pairs, anchors, no-floor) and runs done again since (accuracy-floor): those are in
# the table of docs/accuracy.md, and a line through a few of their points would crowd the image.
CURVE_METHODS = ("default", "prefix", "probe", "setfit", "finetune")


def learning_curves(results: Path, out: Path) -> None:
    runs = [
        r
        for r in read_jsonl(results / "learning-curves.jsonl")
        if "error" not in r and "test_accuracy" in r and r["method"] in CURVE_METHODS
    ]
    # the default backbone's tasks on the first row(s), then the other backbones'
    panels = sorted(
        {(r["task"], r.get("backbone") or accuracy.DEFAULT_BACKBONE) for r in runs},
        key=lambda panel: (panel[1] != accuracy.DEFAULT_BACKBONE, panel[1], panel[0]),
    )
    methods = [m for m in CURVE_METHODS if any(r["method"] == m for r in runs)]
    # the default is attn-prefix: its colour in the other figures
    colors = {"default": ORANGE, "prefix": BLUE, "probe": GREY, "setfit": GREEN, "finetune": BLACK}
    columns = min(4, len(panels))
    lines = -(-len(panels) // columns)
    figure, grid = plt.subplots(lines, columns, figsize=(4.2 * columns + 0.8, 3.6 * lines), squeeze=False)
    figure.subplots_adjust(hspace=0.5)
    axes = list(grid.flat)
    for spare in axes[len(panels) :]:
        spare.set_visible(False)
    shown: dict[str, object] = {}
    for ax, (task, backbone) in zip(axes, panels, strict=False):
        mine = [
            r
            for r in runs
            if r["task"] == task and (r.get("backbone") or accuracy.DEFAULT_BACKBONE) == backbone
        ]
        sizes = sorted({r.get("per_class") for r in mine if r.get("per_class") is not None})
        full_x = (max(sizes) * 4) if sizes else 1
        full_rows = sorted({r["train_rows"] for r in mine if r.get("per_class") is None})
        for method in methods:
            xs, means, lows, highs = [], [], [], []
            for size in [*sizes, None]:
                values = [
                    100 * r["test_accuracy"]
                    for r in mine
                    if r["method"] == method and r.get("per_class") == size
                ]
                if values:
                    xs.append(full_x if size is None else size)
                    means.append(statistics.mean(values))
                    lows.append(min(values))
                    highs.append(max(values))
            if not xs:
                continue
            (line,) = ax.plot(xs, means, marker="o", ms=4, color=colors[method], linewidth=1.2)
            ax.fill_between(xs, lows, highs, color=colors[method], alpha=0.15, linewidth=0)
            shown.setdefault(method, line)
        ticks = [*sizes, *([full_x] if full_rows else [])]
        names = [f"{s:,}" for s in sizes] + (
            [f"all\n({', '.join(f'{n:,}' for n in full_rows)} rows)"] if full_rows else []
        )
        ax.set_xscale("log")
        ax.set_xticks(ticks, names)
        ax.minorticks_off()
        ax.set_title(f"{TASK_NAMES.get(task, task)}, {backbone}", fontsize=9)
        ax.set_xlabel("labelled training rows per class (log scale)")
    for row in grid:
        row[0].set_ylabel("test accuracy, %\n(line: mean over subsets; band: min–max)")
    axes[0].legend(shown.values(), shown.keys(), loc="lower right", fontsize=8)
    figure.suptitle("Learning curves (docs/learning-curves.jsonl)", fontsize=9)
    save(figure, out)


# -- drawing and checking ----------------------------------------------------------------------------

FIGURES: dict[str, tuple[Callable[[Path, Path], None], str | None]] = {
    # image: (how it is drawn, the results file it needs, or None)
    "dataflow.svg": (dataflow, None),
    "accuracy-vs-tuned-share.svg": (accuracy_vs_tuned_share, "accuracy-results.jsonl"),
    "training-speed-vs-accuracy.svg": (training_speed_vs_accuracy, "train-speed.jsonl"),
    "mpnet-tasks.svg": (mpnet_tasks, "accuracy-mpnet-cpu.jsonl"),
    "learning-curves.svg": (learning_curves, "learning-curves.jsonl"),
}
OPTIONAL = {"learning-curves.jsonl"}  # drawn once the file is committed


def draw(results: Path, out: Path) -> list[str]:
    """Every figure whose results file exists, into `out`; the names drawn."""
    style()
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name, (function, needs) in FIGURES.items():
        if needs and not (results / needs).exists():
            if needs not in OPTIONAL:
                sys.exit(f"figures: {results / needs} is missing")
            print(f"figures: {name} skipped: {results / needs} does not exist yet")
            continue
        function(results, out / name)
        drawn.append(name)
    return drawn


def check(results: Path, images: Path) -> int:
    """0 when every committed SVG is what draw() makes from the committed results; 1, naming each
    image that differs, is missing or has no data to draw it, otherwise."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        drawn = draw(results, fresh)
        problems = []
        for name in drawn:
            if not (images / name).exists():
                problems.append(f"{images / name} is not committed: run `python benchmarks/figures.py`")
            elif (images / name).read_bytes() != (fresh / name).read_bytes():
                problems.append(f"{images / name} differs from what the script draws from the committed data")
        for stale in sorted(p.name for p in images.glob("*.svg") if p.name not in drawn):
            problems.append(
                f"{images / stale} is committed, but the script draws no such image from the data"
            )
    for problem in problems:
        print(f"figures: {problem}", file=sys.stderr)
    if problems:
        print("figures: redraw with `python benchmarks/figures.py` and commit docs/images/", file=sys.stderr)
        return 1
    print(f"figures: {len(drawn)} images are what the committed data draws")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of the results files")
    parser.add_argument("--out", type=Path, default=IMAGES, help="the folder of the images")
    args = parser.parse_args()
    if args.check:
        sys.exit(check(args.results, args.out))
    for name in draw(args.results, args.out):
        print(f"figures: wrote {args.out / name}")


if __name__ == "__main__":
    main()
