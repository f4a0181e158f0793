"""Accuracy of every method on real tasks, one JSON line per (task, method, seed); see docs/accuracy.md.

    python -m ipt_edge_export.datasets sst2 ../shared/data/sst2 -o work/sst2      # once per task
    python benchmarks/accuracy.py run --task sst2 --method mlp-prefix --seeds 0,1,2 --max-train-rows 8000
    python benchmarks/accuracy.py table                                          # mean ± sd per row
    python benchmarks/accuracy.py table --device cuda --grid prefix-main         # the runs of one grid
    python benchmarks/accuracy.py grid --jobs jobs.jsonl --workers 8 --device cuda  # many runs at once

A grid job is one JSON object per line: {"task": ..., "method": ..., "seed": ..., and optionally
"lr", "prompt_length", "epochs", "max_train_rows", "eval_every", "prefix_from_layer", "backbone"}. Jobs run
in worker processes (on one GPU, several small runs at once keep it busy); each finished run is
appended to --results at once, so a grid stopped midway keeps what it finished.

`table` prints every run of --results, or only those trained on --device (runs recorded before the
field existed were on cpu) and/or matching a job of a --grid (a name in benchmarks/grids/ or a path;
repeatable): the tables of docs/accuracy.md and the README are printed by the commands they cite.

--backbone names the frozen encoder (`ipt-edge train --backbone`: a packaged name such as
all-mpnet-base-v2, or a folder); runs record it as "backbone" (runs recorded before the field were on
the default, all-MiniLM-L6-v2), and `table` marks the method of a run on another backbone
("probe (all-mpnet-base-v2)") and, with --backbone, prints only that backbone's runs. Pair tasks (rte,
cb, boolq) read their second text from the task's text_pair_column. cb and boolq have no split folder
from ipt_edge_export.datasets: `python benchmarks/accuracy.py split --task cb` (or boolq) writes one
from ../shared/data, seeded (cb: 50 of train.tsv's 250 rows as dev, dev.tsv's 56 as test; boolq:
val.tsv's 3,270 rows as 2,270 train / 500 dev / 500 test, as ../shared/README.md suggests), and so
do mrpc, wic and emotion (dev: 300, 400 and 500 rows of train.tsv; test: their dev.tsv) and trec
(500 dev and 500 test rows of train.tsv). WiC's target word has a column of its own; `split` puts
it in front of the first sentence ("place: Do you want to come over to my place later?") so that a
model that reads only the two texts sees which word the question is about.

Methods: probe and finetune (baselines.py), and every generator family of `ipt-edge train`
(ipt_edge_export.model.GENERATORS). Rows of the prepended-prompt generators (static, mlp-deep, ...)
that earlier versions trained stay in the results as history; they can no longer be rerun.
Test accuracy is measured on held-out rows the method never saw (for SST-2: unseen full sentences);
SST-2 models are also tested on Rotten Tomatoes sentences SST-2 does not contain, and on IMDB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

GRIDS = Path(__file__).parent / "grids"
TASKS = {  # split folders written by ipt_edge_export.datasets
    "sst2": {
        "folder": "work/sst2", "text_column": "sentence", "labels": "0=negative,1=positive",
        "cross": {"rotten": "work/rotten/test.tsv", "imdb": "work/imdb/test.tsv"},
    },
    "agnews": {"folder": "work/agnews", "text_column": "text", "labels": None},
    "rte": {"folder": "work/rte", "text_column": "sentence1", "text_pair_column": "sentence2", "labels": None},
    "cb": {"folder": "work/cb", "text_column": "text", "text_pair_column": "text_pair", "labels": None},
    "boolq": {"folder": "work/boolq", "text_column": "text", "text_pair_column": "text_pair", "labels": None},
    "mrpc": {"folder": "work/mrpc", "text_column": "text", "text_pair_column": "text_pair", "labels": None},
    "wic": {"folder": "work/wic", "text_column": "text", "text_pair_column": "text_pair", "labels": None},
    "emotion": {"folder": "work/emotion", "text_column": "text", "labels": None},
    "trec": {"folder": "work/trec", "text_column": "text", "labels": None},
}  # fmt: skip
# ipt_edge_export.backbones.DEFAULT_BACKBONE, restated: `table` runs without torch.
DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
# Split folders `split` writes from ../shared/data (the others: python -m ipt_edge_export.datasets).
SPLITS = {  # task: (folder in --data, {part: (file, rows, or None for the rest), in the order taken})
    "cb": ("cb", {"dev": ("train.tsv", 50), "train": ("train.tsv", None), "test": ("dev.tsv", None)}),
    "boolq": ("boolq", {"dev": ("val.tsv", 500), "test": ("val.tsv", 500), "train": ("val.tsv", None)}),
    "mrpc": ("mrpc", {"dev": ("train.tsv", 300), "train": ("train.tsv", None), "test": ("dev.tsv", None)}),
    "wic": ("wic", {"dev": ("train.tsv", 400), "train": ("train.tsv", None), "test": ("dev.tsv", None)}),
    "emotion": (
        "emotion",
        {"dev": ("train.tsv", 500), "train": ("train.tsv", None), "test": ("dev.tsv", None)},
    ),
    "trec": ("trec", {"dev": ("train.tsv", 500), "test": ("train.tsv", 500), "train": ("train.tsv", None)}),
}
BASELINES = ("probe", "finetune")
BASELINE_LR = {"probe": 1e-3, "finetune": 3e-5}
# Every generator family's: ipt_edge_export.model.DEFAULT_LR, restated here so that `table` runs
# without torch (tests/test_docs.py checks they agree).
GENERATOR_LR = 5e-2


def default_lr(method: str) -> float:
    """The rate a method trains at without --lr: a baseline's BASELINE_LR, a generator family's
    GENERATOR_LR. The removed prepended-prompt generators (no "-prefix" suffix) trained at 5e-3:
    their history rows."""
    return BASELINE_LR.get(method) or (GENERATOR_LR if method.endswith("prefix") else 5e-3)


def run_one(task: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    from ipt_edge.tokenizer import BundleTokenizer
    from ipt_edge_export.baselines import run as run_baseline
    from ipt_edge_export.checkpoint import model_from_checkpoint, read_checkpoint
    from ipt_edge_export.train import TrainOptions, accuracies, train

    spec = TASKS[task]
    folder = Path(spec["folder"])
    cross = {k: Path(v) for k, v in spec.get("cross", {}).items()}
    for name, path in cross.items():
        if not path.is_file():  # the table shows "–" for it; docs/accuracy.md says how to make them
            print(f"note: {path} does not exist: {task} runs are not tested on {name}", file=sys.stderr)
    tests = {"test": folder / "test.tsv", **{k: v for k, v in cross.items() if v.is_file()}}
    variant = f"-p{args.prompt_length}" if args.prompt_length != 16 else ""
    variant += f"-lr{args.lr:g}" if args.lr else ""
    variant += f"-from-{args.init_generator.name}" if args.init_generator else ""
    variant += f"-k{args.prefix_from_layer}" if args.prefix_from_layer else ""
    # The training budget too: a subsample run and a full run of one task must not share a folder.
    variant += f"-n{args.max_train_rows}" if args.max_train_rows else ""
    variant += f"-e{args.epochs:g}" if args.epochs != 1 else ""
    backbone_name = args.backbone or DEFAULT_BACKBONE
    variant += f"-{Path(backbone_name).name}" if backbone_name != DEFAULT_BACKBONE else ""
    options = TrainOptions(
        train_file=folder / "train.tsv", dev_file=folder / "dev.tsv",
        out_dir=Path(args.work) / f"{task}-{method}{variant}-{seed}", text_column=spec["text_column"],
        text_pair_column=spec.get("text_pair_column"), labels=spec["labels"],
        generator=method if method not in BASELINES else "prefix",  # unused by the baselines
        prompt_length=args.prompt_length, epochs=args.epochs, seed=seed,
        max_train_rows=args.max_train_rows, eval_every=args.eval_every, threads=args.threads,
        lr=args.lr or default_lr(method), init_generator=args.init_generator,
        device=args.device, **({"prefix_from_layer": args.prefix_from_layer} if args.prefix_from_layer else {}),
        backbone=backbone_name,
    )  # fmt: skip
    started = time.perf_counter()
    if method in BASELINES:
        report = run_baseline(method, options, tests)
    else:
        record = train(options, progress=lambda message: None)
        model, backbone = model_from_checkpoint(read_checkpoint(options.out_dir))
        model.to(options.device)
        encoder = BundleTokenizer(backbone.tokenizer_path, model.config.max_length)
        report = {
            "tuned_parameters": model.tuned_parameter_count(),
            "tuned_share": record["tuned_share"],
            "train_rows": record["train_rows"],
            "steps": record["steps"],
            "train_seconds": record["train_seconds"],
            "dev_accuracy": record["dev_accuracy"],
        }
        report.update(accuracies(model, encoder, tests, options, model.config.label_values))
    report.update(task=task, method=method, seed=seed, epochs=args.epochs, lr=options.lr,
                  prompt_length=args.prompt_length, max_train_rows=args.max_train_rows,
                  init_generator=str(args.init_generator or ""), threads=args.threads, device=args.device,
                  prefix_from_layer=args.prefix_from_layer,
                  seconds=round(time.perf_counter() - started, 1))  # fmt: skip
    if backbone_name != DEFAULT_BACKBONE:  # runs on the default keep the fields they always had
        report["backbone"] = backbone_name
    return report


def label(r: dict) -> str:
    """The method, with what differs from its defaults: 'mlp-deep (P=32, lr 0.01, pretrained)'."""
    extras = []
    if r.get("prompt_length", 16) != 16 and r["method"] not in BASELINES:
        extras.append(f"P={r['prompt_length']}")
    if r["lr"] != default_lr(r["method"]):
        extras.append(f"lr {r['lr']:g}")
    if r.get("deep_scale_init") == 0:  # runs before DeepPrompts' scale started at one
        extras.append("old deep design: one scale per layer, from 0")
    if r.get("prefix_from_layer"):
        extras.append(f"from layer {r['prefix_from_layer']}")
    if r.get("init_generator") and r["method"] not in BASELINES:
        extras.append(f"generator from {Path(r['init_generator']).name}")
    if r.get("backbone", DEFAULT_BACKBONE) != DEFAULT_BACKBONE:
        extras.append(Path(r["backbone"]).name)
    return r["method"] + (f" ({', '.join(extras)})" if extras else "")


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} (one seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def grid_jobs(grid: str) -> list[dict]:
    """The jobs of a grid: a name in benchmarks/grids/ ('prefix-main') or a path to a JSONL file."""
    path = Path(grid) if grid.endswith(".jsonl") else GRIDS / f"{grid}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


JOB_DEFAULTS = {
    "epochs": 1.0,
    "max_train_rows": None,
    "prompt_length": 16,
    "prefix_from_layer": 0,
    "backbone": DEFAULT_BACKBONE,
}


def from_job(r: dict, job: dict) -> bool:
    """Whether run r is what job describes: same task, method, seed, budget, P and first layer, and the
    job's lr where it names one (a job without lr ran at its method's default or at --lr-from's choice)."""
    if any(r[k] != job[k] for k in ("task", "method", "seed")) or ("lr" in job and r["lr"] != job["lr"]):
        return False
    return all((r.get(k) or JOB_DEFAULTS[k]) == (job.get(k) or JOB_DEFAULTS[k]) for k in JOB_DEFAULTS)


def table(
    results_file: Path, device: str | None = None, grids: list[str] | None = None, backbone: str | None = None
) -> str:
    """Markdown: one row per (task, method and variant, training budget), best first within a budget;
    then, where a task has them, the cross-dataset tests of the same runs. Only runs trained on
    `device`, only runs of a job of one of `grids`, and only runs on `backbone`, when given."""
    jobs = [job for grid in grids or [] for job in grid_jobs(grid)]
    rows: dict[tuple, list[dict]] = {}
    for line in results_file.read_text().splitlines():
        r = json.loads(line)
        if "error" in r:  # a grid run that failed: reported where it ran, not a result
            continue
        if device and r.get("device", "cpu") != device:  # runs before the field: all on cpu
            continue
        if grids and not any(from_job(r, job) for job in jobs):
            continue
        if backbone and r.get("backbone", DEFAULT_BACKBONE) != backbone:  # runs before the field: default
            continue
        rows.setdefault((r["task"], label(r), r["train_rows"], r["epochs"]), []).append(r)

    def order(item):  # by task, then training budget, then best first
        (task, _, train_rows, epochs), runs = item
        return task, -train_rows * epochs, -statistics.mean(r["test_accuracy"] for r in runs)

    out = [
        "| task | method | tuned share | train rows × epochs | test accuracy (mean ± sd) | seeds | dev accuracy | train time s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cross = []
    for (task, name, train_rows, epochs), runs in sorted(rows.items(), key=order):
        accuracy = _mean_sd([100 * r["test_accuracy"] for r in runs])
        dev = statistics.mean(100 * r["dev_accuracy"] for r in runs)
        timed = [r["train_seconds"] for r in runs if "train_seconds" in r]  # early runs: total time only
        seconds = (
            f"{statistics.mean(timed):.0f}"
            if timed
            else f"{statistics.mean(r['seconds'] for r in runs):.0f} (total)"
        )
        budget = f"{train_rows} × {epochs:g}"
        out.append(
            f"| {task} | {name} | {runs[0]['tuned_share']:.3%} | {budget} | {accuracy} | {len(runs)} "
            f"| {dev:.2f} | {seconds} |"
        )
        others = TASKS[task].get("cross", {})
        cells = [[100 * r[f"{k}_accuracy"] for r in runs if f"{k}_accuracy" in r] for k in others]
        if any(cells):  # a cell averages the runs that were tested on that set
            text = " | ".join(_mean_sd(c) + ("" if len(c) == len(runs) else f" ({len(c)} runs)") if c else "–"
                              for c in cells)  # fmt: skip
            cross.append(f"| {task} | {name} | {budget} | {accuracy} | {text} |")
    if cross:
        out += ["", "| trained on | method | train rows × epochs | own test | "
                + " | ".join(TASKS["sst2"]["cross"]) + " |", "|---|---|---|---|---|---|", *cross]  # fmt: skip
    return "\n".join(out)


def _grid_job(job: dict, args: argparse.Namespace) -> dict:
    run_args = argparse.Namespace(
        **{**vars(args), **{k: v for k, v in job.items() if k not in ("task", "method", "seed")}}
    )
    try:
        return run_one(job["task"], job["method"], job["seed"], run_args)
    except Exception as error:  # one failed run must not stop the grid; it is reported
        return {**job, "error": f"{type(error).__name__}: {error}"}


def best_lrs(sweep: Path) -> dict[str, float]:
    """Per method, the learning rate with the best mean dev accuracy in a sweep's results (runs at
    the default P and first layer only): the test sets are never looked at to choose."""
    dev: dict[str, dict[float, list[float]]] = {}
    for line in sweep.read_text().splitlines():
        r = json.loads(line)
        if "error" in r or r.get("prompt_length", 16) != 16 or r.get("prefix_from_layer"):
            continue
        dev.setdefault(r["method"], {}).setdefault(r["lr"], []).append(r["dev_accuracy"])
    return {m: max(lrs, key=lambda lr: statistics.mean(lrs[lr])) for m, lrs in dev.items()}


def unfinished(jobs: list[dict], results: Path) -> list[dict]:
    """The jobs no run of `results` is (from_job): a grid run again resumes where it stopped."""
    runs = (
        [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        if results.exists()
        else []
    )
    runs = [r for r in runs if "error" not in r]  # error rows of older grids are not finished runs
    return [job for job in jobs if not any(from_job(r, job) for r in runs)]


def grid(args: argparse.Namespace) -> None:
    """Run every job of --jobs not yet in --results, --workers at a time; append each finished run
    to --results, and each failed one to --errors (never to the results: a rerun retries it).
    With --lr-from SWEEP, a job without "lr" whose method the sweep tried takes its best dev lr."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    jobs = [json.loads(line) for line in args.jobs.read_text().splitlines() if line.strip()]
    if args.lr_from:
        chosen = best_lrs(args.lr_from)
        print(f"learning rates chosen on dev: {chosen}", flush=True)
        jobs = [{"lr": chosen[j["method"]], **j} if j["method"] in chosen else j for j in jobs]
    todo = unfinished(jobs, args.results)
    print(
        f"{len(jobs) - len(todo)} of {len(jobs)} jobs already in {args.results}: running {len(todo)}",
        flush=True,
    )
    context = multiprocessing.get_context("spawn")  # CUDA cannot be shared by forked processes
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = [pool.submit(_grid_job, job, args) for job in todo]
        for done, future in enumerate(as_completed(futures), 1):
            report = future.result()
            with open(args.errors if "error" in report else args.results, "a", encoding="utf-8") as file:
                file.write(json.dumps(report) + "\n")
            print(f"[{done}/{len(todo)}] {json.dumps(report)[:300]}", flush=True)


def _with_word(header: str, row: str) -> str:
    """A WiC row with its target word put in front of its first text: "word: text" (the word's
    character offsets in that text, start1 and end1, move with it)."""
    fields = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    added = f"{fields['word']}: "
    fields["text"] = added + fields["text"]
    for offset in ("start1", "end1"):
        fields[offset] = str(int(fields[offset]) + len(added))
    return "\t".join(fields.values())


def split(task: str, source: Path, out: Path, seed: int = 0) -> dict[str, int]:
    """A seeded split folder (train.tsv, dev.tsv, test.tsv) for a task of SPLITS; rows are copied as
    they are (plain TSV lines: no quoting, as in ../shared/data)."""
    import random

    parts = SPLITS[task][1]
    lines: dict[str, tuple[str, list[str]]] = {}
    for file in {file for file, _ in parts.values()}:
        header, *rows = (source / file).read_text(encoding="utf-8").splitlines()
        rows = [_with_word(header, row) if task == "wic" else row for row in rows if row.strip()]
        random.Random(seed).shuffle(rows)
        lines[file] = (header, rows)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for part, (file, size) in parts.items():  # in order: fixed-size parts first take their rows
        header, rows = lines[file]
        taken = rows[:size] if size is not None else rows
        lines[file] = (header, rows[len(taken) :])
        (out / f"{part}.tsv").write_text("\n".join([header, *taken]) + "\n", encoding="utf-8")
        counts[part] = len(taken)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["run", "table", "grid", "split", "curves"])
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--method", help="probe, finetune, or a generator family (e.g. mlp-prefix)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-train-rows", type=int)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument(
        "--lr",
        type=float,
        help="default: 1e-3 probe, 3e-5 finetune, 5e-2 generator families",
    )
    parser.add_argument("--init-generator", type=Path, help="a checkpoint whose generator starts training")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--prefix-from-layer", type=int, default=0, help="first layer given a prefix")
    parser.add_argument(
        "--backbone",
        help=f"run/grid: the frozen encoder (default {DEFAULT_BACKBONE}); table: only runs on it",
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="split: ../shared/data")
    parser.add_argument(
        "--device", help="cpu (default) or cuda, for training and evaluation; table: only runs trained there"
    )
    parser.add_argument(
        "--grid",
        action="append",
        help="table: only runs of this grid's jobs (benchmarks/grids/NAME.jsonl or a path)",
    )
    parser.add_argument("--jobs", type=Path, help="grid: a JSONL file of runs")
    parser.add_argument("--workers", type=int, default=1, help="grid: runs at once")
    parser.add_argument("--lr-from", type=Path, help="grid: a sweep's results; jobs without lr take its best")
    parser.add_argument("--work", default="work/accuracy")
    parser.add_argument(
        "--errors", type=Path, default=Path("work/accuracy-errors.jsonl"), help="grid: failed runs"
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="default: docs/accuracy-results.jsonl; curves: docs/learning-curves.jsonl",
    )
    parser.add_argument(
        "--per-class",
        default="8,16,64",
        help="curves: rows per label, comma-separated; all: the whole training split (subsets: seeds)",
    )
    parser.add_argument("--subsets", type=int, default=3, help="curves: subsets per size (subset i: seed i)")
    parser.add_argument(
        "--methods",
        default="default,probe",
        help="curves: default,cross-entropy,pairs,prefix,probe,setfit,finetune",
    )
    parser.add_argument(
        "--setfit-python", default="work/setfit-venv/bin/python", help="curves: SetFit's venv"
    )
    parser.add_argument("--table", action="store_true", help="curves: print the table of --results")
    args = parser.parse_args()
    if args.command == "curves":
        import learning_curves

        results = args.results or Path("docs/learning-curves.jsonl")
        if args.table:
            print(learning_curves.table(results))
            return
        if args.task is None:
            parser.error("curves: --task is required")
        learning_curves.run(
            TASKS, args.task, [None if n == "all" else int(n) for n in args.per_class.split(",")], args.subsets, args.methods.split(","),
            args.backbone or DEFAULT_BACKBONE, results, args.setfit_python,
        )  # fmt: skip
        return
    args.results = args.results or Path("docs/accuracy-results.jsonl")
    if args.command == "table":
        known = ", ".join(sorted(g.stem for g in GRIDS.glob("*.jsonl")))
        for name in args.grid or []:
            if not (Path(name) if name.endswith(".jsonl") else GRIDS / f"{name}.jsonl").is_file():
                parser.error(f"--grid {name}: no such grid (benchmarks/grids/ has {known})")
        print(table(args.results, args.device, args.grid, args.backbone))
        return
    if args.command == "split":
        if args.task not in SPLITS:
            parser.error(
                f"split: --task must be one of {', '.join(SPLITS)} (the others: ipt_edge_export.datasets)"
            )
        counts = split(args.task, args.data / SPLITS[args.task][0], Path(TASKS[args.task]["folder"]))
        print(f"{TASKS[args.task]['folder']}: {counts}")
        return
    args.device = args.device or "cpu"
    if args.command == "grid":
        grid(args)
        return
    for seed in (int(s) for s in args.seeds.split(",")):
        report = run_one(args.task, args.method, seed, args)
        with open(args.results, "a", encoding="utf-8") as file:
            file.write(json.dumps(report) + "\n")
        print(json.dumps(report))


if __name__ == "__main__":
    main()
