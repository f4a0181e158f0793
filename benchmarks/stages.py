"""Where one task's time goes, stage by stage, through the real runtime (ipt_edge.Bundle).

    python benchmarks/stages.py BUNDLE --data work/sst2/test.tsv --text-column sentence [--precision int8]

Wraps each session's `run` (embedding, the task's generator, the backbone) and the tokenizer with
a timer, scores the rows once (after a warm-up batch), and prints each stage's seconds and share;
"other" is what is left: the prefix hand-over, pooling and Python.

With `--plain GRAPH` (the plain backbone bench.py exports: backbone-fused.onnx, or
backbone-fused.int8.onnx with --precision int8, in its --work folder's peers-*/), it then runs the
bundle's backbone graph, fed the batches' real prefixes, and the plain backbone on the same batches
of the same texts, one after the other (which goes first alternates), --rounds times: the prompt
tax paid inside the backbone graph itself, apart from the generator and the embedding lookup.
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
    parser.add_argument(
        "--plain", type=Path, help="a plain backbone graph to compare the backbone graph with"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the --plain comparison")
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

    encoder = bundle.encoder
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
    if args.plain:
        # A second pass keeps every batch's feeds (prefixes included). Not in the timed pass: held
        # generator outputs keep ONNX Runtime from reusing their memory, which would slow it.
        batches: list[dict] = []  # each batch's embedding feeds, then its backbone feeds

        def keep(session) -> None:
            inner = session.run

            def run(names, feeds):
                batches.append(feeds)
                return inner(names, feeds)

            session.run = run

        keep(bundle.embed)
        keep(bundle.encoder)
        classifier.logits(texts, args.batch_size)
        pairs = [(batches[i]["input_ids"], batches[i + 1]) for i in range(0, len(batches), 2)]
        print(backbone_alone(encoder, args.plain, pairs, args.threads, args.rounds))


def backbone_alone(encoder, plain_path: Path, batches: list[tuple], threads: int, rounds: int) -> str:
    """The bundle's backbone graph against the plain backbone graph on the same batches."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    plain = ort.InferenceSession(str(plain_path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in plain.get_inputs()}
    ratios = []
    for round_number in range(rounds):
        spent = {"bundle": 0.0, "plain": 0.0}
        for index, (input_ids, feeds) in enumerate(batches):
            plain_feeds = {k: v for k, v in {**feeds, "input_ids": input_ids}.items() if k in wanted}
            runs = [("bundle", encoder, feeds), ("plain", plain, plain_feeds)]
            for name, session, inputs in runs if (index + round_number) % 2 else runs[::-1]:
                begin = time.perf_counter()
                session.run(None, inputs)
                spent[name] += time.perf_counter() - begin
        ratios.append(spent["plain"] / spent["bundle"])
    ratios.sort()
    return (
        f"\nthe backbone graph with the task's prefix vs the plain backbone ({plain_path}), same batches, "
        f"{rounds} alternating rounds: {ratios[len(ratios) // 2]:.3f}x "
        f"(rounds {', '.join(f'{r:.3f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
