"""Where one task's time goes, stage by stage, through the real runtime (ipt_edge.Bundle).

    python benchmarks/stages.py BUNDLE --data work/sst2/test.tsv --text-column sentence [--precision int8]

Wraps each session's `run` (embedding, the task's generator, the backbone) and the tokenizer with
a timer, scores the rows once (after a warm-up batch), and prints each stage's seconds and share;
"other" is what is left: the prefix hand-over, pooling and Python.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--task", help="default: the bundle's only task")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    from ipt_edge import Bundle, Classifier
    from ipt_edge.tables import TableReader, row_text

    with TableReader(args.data) as reader:
        texts = [row_text(args.data, line, row, args.text_column) for line, row in reader][: args.rows]
    bundle = Bundle.load(args.bundle, threads=args.threads, precision=args.precision)
    classifier = Classifier(bundle, args.task)
    seconds: dict[str, float] = defaultdict(float)

    def timed(owner: object, method: str, stage: str) -> None:
        inner = getattr(owner, method)

        def run(*a, **k):
            begin = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                seconds[stage] += time.perf_counter() - begin

        setattr(owner, method, run)

    timed(bundle.text_encoder(classifier.task.info.max_length), "tokenize", "tokenize")
    timed(bundle.embed, "run", "embed.onnx")
    timed(classifier.task.generator, "run", "generator.onnx")
    timed(bundle.encoder, "run", "encoder.onnx (the backbone)")
    classifier.logits(texts[: args.batch_size], args.batch_size)  # warm-up
    seconds.clear()
    begin = time.perf_counter()
    classifier.logits(texts, args.batch_size)
    total = time.perf_counter() - begin
    print(f"{len(texts)} rows of {args.data}, {args.precision}, batch {args.batch_size}, {args.threads} threads: "
          f"{total:.2f} s, {len(texts) / total:.1f} rows/s\n")  # fmt: skip
    print("| stage | seconds | share |\n|---|---|---|")
    for stage, spent in [*seconds.items(), ("other", total - sum(seconds.values()))]:
        print(f"| {stage} | {spent:.3f} | {spent / total:.1%} |")


if __name__ == "__main__":
    main()
