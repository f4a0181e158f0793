"""Scoring at scale (docs/performance.md): one process against Ray Data on this machine, and peak
memory as rows grow.

    ipt-edge export models/sst2-sentiment -o work/bundle
    python benchmarks/scale.py --bundle work/bundle --data ../shared/data/sst2/dev.tsv \\
        --text-column sentence --rows 100000 --small 10000 --threads 2 --workers 2

The data is the real file repeated to --rows (and --small) rows, written once as Parquet in
--work. Every configuration runs in a fresh process (its own peak RSS) through the same code as
`ipt-edge score IN.parquet -o OUT.parquet` (ipt_edge.scoring.score_file, chunks of 4096 rows
committed as they go):

  local-small   one process, --threads ONNX Runtime threads, --small rows   (peak RSS at 10k)
  local         the same on --rows rows                                     (rows/s, peak RSS)
  ray           --engine ray: a local Ray cluster of --workers CPUs, one actor per CPU with one
                ONNX Runtime thread each; its driver reads, checks and writes

"Start-up" is the whole time of the same configuration on --tiny rows (imports, bundle load; for
Ray also ray.init and starting the actors): what a run costs before it scores at full speed.
"rows/s after start-up" is rows / (total time - start-up). (Timing from the first committed chunk
would flatter Ray: its actors score later chunks while the driver waits for the first, in order.)
Peak RSS is the process's own (ru_maxrss; for Ray the driver's, the actors' are separate processes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

START = time.perf_counter()


def prepare(data: Path, text_column: str, rows: int, work: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ipt_edge.tables import TableReader

    path = work / f"{data.stem}-{rows}.parquet"
    if path.exists():
        return path
    with TableReader(data) as reader:
        source = [row for _, row in reader]
    repeated = [source[i % len(source)] for i in range(rows)]
    table = pa.table({c: [r[c] for r in repeated] for c in reader.columns})
    work.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=16384)
    return path


def child(args: argparse.Namespace) -> None:
    """One configuration, in this process; prints a JSON line."""
    from ipt_edge.classifier import Classifier
    from ipt_edge.scoring import Outputs, Scorer, score_file

    out = Path(args.out)
    out.unlink(missing_ok=True)
    marks: list[tuple[float, int]] = []
    if args.engine == "ray":
        from ipt_edge.ray import RayScorer

        classifier = Classifier.load(args.bundle, threads=1)
        scorer = RayScorer(
            Path(args.bundle), classifier.task_name, classifier.labels, classifier.label_index,
            workers=args.workers, threads=1,
        )  # fmt: skip
    else:
        classifier = Classifier.load(args.bundle, threads=args.threads)
        outputs = Outputs.single(classifier.task_name, classifier.labels)
        scorer = Scorer(classifier.bundle, outputs, {classifier.task_name: classifier.label_index})
    try:
        report = score_file(
            scorer, Path(args.input), out, bundle=Path(args.bundle), text_column=args.text_column,
            on_progress=lambda rows, done, total: marks.append((time.perf_counter(), rows)),
        )  # fmt: skip
    finally:
        scorer.close()
    end = time.perf_counter()
    (first_time, first_rows) = marks[0]
    print(
        json.dumps(
            {
                "rows": report.rows,
                "startup_s": first_time - START,
                # rows after the first chunk over the time after it (0 when there was one chunk)
                "rows_per_s": (report.rows - first_rows) / (end - first_time)
                if report.rows > first_rows
                else 0.0,
                "total_s": end - START,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", default="work/bundle")
    parser.add_argument("--data", default="../shared/data/sst2/dev.tsv")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--tiny", type=int, default=200, help="rows of the start-up runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", default="work/scale")
    parser.add_argument("--configs", default="local-tiny,ray-tiny,local-small,local,ray")
    parser.add_argument("--child", choices=["local", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.engine = args.child
        child(args)
        return
    work = Path(args.work)
    inputs = {
        n: prepare(Path(args.data), args.text_column, n, work) for n in {args.rows, args.small, args.tiny}
    }
    configs = {
        "local-tiny": ("local", args.tiny),
        "ray-tiny": ("ray", args.tiny),
        "local-small": ("local", args.small),
        "local": ("local", args.rows),
        "ray": ("ray", args.rows),
    }
    results = {}
    for name in args.configs.split(","):
        engine, rows = configs[name]
        command = [sys.executable, __file__, "--child", engine, "--input", str(inputs[rows]),
                   "--out", str(work / f"out-{name}.parquet"), "--bundle", args.bundle,
                   "--text-column", args.text_column, "--threads", str(args.threads),
                   "--workers", str(args.workers)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
        if done.returncode != 0:
            sys.exit(f"{name} failed:\n{done.stderr}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {results[name]}", file=sys.stderr)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    load = os.getloadavg()[0]
    print(
        f"\n{os.cpu_count()} cores, load average {load:.2f} before the last run; data: {args.data} repeated\n"
    )
    print("| config | rows | start-up s | rows/s after start-up | total s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    local_label, ray_label = (
        f"one process, {args.threads} threads",
        f"Ray Data, {args.workers} actors x 1 thread",
    )
    labels = {"local-tiny": local_label, "local-small": local_label, "local": local_label,
              "ray-tiny": ray_label, "ray": ray_label}  # fmt: skip
    rates = {}
    for name, r in results.items():
        startup = results.get(f"{name.split('-')[0]}-tiny", {}).get("total_s")
        rate = r["rows"] / (r["total_s"] - startup) if startup and not name.endswith("tiny") else None
        rates[name] = rate
        print(f"| {labels[name]} | {r['rows']:,} | {startup if startup else r['total_s']:.1f} | "
              f"{f'{rate:.0f}' if rate else '–'} | {r['total_s']:.1f} | {r['peak_rss_mb']:.0f} |")  # fmt: skip
    if rates.get("ray") and rates.get("local"):
        print(
            f"\nRay / one process, rows/s after start-up: {rates['ray'] / rates['local']:.2f}x (target >= 0.90x)"
        )
    if "local" in results and "local-small" in results:
        ratio = results["local"]["peak_rss_mb"] / results["local-small"]["peak_rss_mb"]
        print(f"peak RSS at {args.rows:,} / at {args.small:,} rows: {ratio:.2f}x (target <= 1.20x)")


if __name__ == "__main__":
    main()
