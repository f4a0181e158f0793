"""The prompt tax on each architecture: a P=16 task through the runtime against its own plain model,
side by side in one process (docs/performance.md, "The prompt tax on each architecture").

    python benchmarks/prompt_tax.py --size minilm --rows 512 --rounds 7

Each `model_type` export/architectures.py supports is a random model built offline, with its own
tokenizer, by tests/tiny_architectures.py (no real weights needed): the tests' tiny size, or
all-MiniLM-L6-v2's dimensions with --size minilm. A P=16 attn-prefix task is trained a few steps on
it and exported with the default (unfused) backbone graph. Then, on the same texts (~22 tokens) in
the same length-sorted batches:

  plain            the Hugging Face model exported (input_ids -> last_hidden_state) and fused where
                   ONNX Runtime's transformer optimizer can, as optimize_encoder does: what a user
                   runs without prompts (tokenizer + ONNX Runtime)
  plain (control)  a second session of the same graph: how far two identical contestants land apart
  task             the whole runtime (ipt_edge.Classifier.logits: tokenizer, embed, generator,
                   encoder, head)

are timed by bench.py's paired blocks (bench.paired_blocks, as `bench.py --paired` times its
configs): blocks of --block batches, each block through all three back to back in a fresh random
order, for --rounds rounds.

The estimator, for the table and the verdict: × plain is the ratio of the blocks' medians, the
plain graph's time over the task's, where a contestant's time is the sum over blocks of the block's
median time over the rounds (a stall of the machine in one round of one block does not move it).
The per-round ratios' median (min–max) stand beside it. The verdict: met where that ratio is at
least bench.py's target for the shipped task against its plain backbone (0.95×, issue #16).
Weights are random, so this measures speed only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tiny models of tests/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench.py
import bench

from tests.tiny_architectures import ARCHITECTURES, WORDS, Size, write_architecture

PROMPT_LENGTH = 16
MAX_LENGTH = 128
MINILM = Size(hidden=384, layers=6, heads=12, intermediate=1536, embedding=None)  # all-MiniLM-L6-v2's
TARGET = bench.TARGETS["ipt"]  # the shipped task against its plain backbone at T tokens, fp32


def plain_graph(folder: Path, path: Path) -> dict[str, int]:
    """The Hugging Face model itself (input_ids -> last_hidden_state), exported as export exports
    graphs and fused by ONNX Runtime's optimizer where it can: what a user runs without prompts."""
    import inspect

    import torch

    from ipt_edge_export.checkpoint import load_backbone
    from ipt_edge_export.onnx_export import _export, optimize_encoder

    model = load_backbone(str(folder)).model
    types = "token_type_ids" in inspect.signature(model.forward).parameters

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # [B, T] each -> [B, T, H]
            extra = {"token_type_ids": token_type_ids} if types else {}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    ids = torch.randint(5, model.config.vocab_size, (2, 9))
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "hidden"]}
    _export(Plain().eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), path, names, ["hidden"], axes)
    return optimize_encoder(path, model.config)


def plain_runner(graph: Path, tokenizer, lengths: list[int], size: Size, threads: int) -> bench.Runner:
    """A session of the plain graph, fed by the backbone's tokenizer."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}

    def run(rows: list[str]):
        batch = tokenizer.encode(rows)
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                 "token_type_ids": batch.token_type_ids}  # fmt: skip
        return session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]

    return bench.Runner(run, lengths, size.hidden, size.layers)


def measure(
    kind: str, work: Path, size: Size, texts: list[str], train: Path, args: argparse.Namespace
) -> dict:
    """One architecture: its random model, a trained and exported P=16 task, and the three
    contestants timed in paired blocks."""
    from ipt_edge.classifier import Classifier
    from ipt_edge.manifest import read_manifest
    from ipt_edge.tokenizer import BundleTokenizer
    from ipt_edge_export.onnx_export import export_checkpoint
    from tests.tiny import train_checkpoint

    folder = write_architecture(kind, work / kind, size=size)
    checkpoint = train_checkpoint(folder, train, None, work / f"ckpt-{kind}", generator="attn-prefix",
                                  prompt_length=PROMPT_LENGTH, max_length=MAX_LENGTH)  # fmt: skip
    bundle = work / f"bundle-{kind}"
    export_checkpoint(checkpoint, bundle, task="t", log=lambda message: None)
    graph = work / f"plain-{kind}.onnx"
    plain_fusions = plain_graph(folder, graph)
    tokenizer = BundleTokenizer(folder / "tokenizer.json", MAX_LENGTH)
    lengths = [len(e.ids) for e in tokenizer.tokenize(texts)]
    classifier = Classifier.load(bundle, threads=args.threads)
    runners = {
        "plain": plain_runner(graph, tokenizer, lengths, size, args.threads),
        "plain (control)": plain_runner(graph, tokenizer, lengths, size, args.threads),
        "task": bench.Runner(lambda rows: classifier.logits(rows, args.batch_size), lengths, size.hidden,
                             size.layers, prefix=PROMPT_LENGTH),
    }  # fmt: skip
    bench.log(f"{kind}: timing plain, plain (control) and task")
    runs, robust = bench.paired_blocks(
        runners, texts, bench.batch_order(lengths), args.batch_size, args.block, args.rounds
    )
    return {
        "model_type": kind,
        "tokens": statistics.mean(lengths),
        "encoder_fusions": read_manifest(bundle).encoder.fusions.get("Attention", 0),
        "plain_fusions": plain_fusions.get("Attention", 0),
        "runs": runs,
        "robust": robust,
    }


def report(results: list[dict], args: argparse.Namespace, size: Size) -> None:
    print(f"size {args.size} ({size}), {args.rows} rows of ~{results[0]['tokens']:.0f} tokens, batch "
          f"{args.batch_size}, {args.threads} threads; bench.py's paired blocks: {args.rounds} rounds, blocks of "
          f"{args.block} batches")  # fmt: skip
    print("rows/s and × plain: blocks' medians (a contestant's time: the sum over blocks of the block's median "
          "time over the rounds; × plain: the plain graph's time over the task's); per round: the rounds' own "
          "ratios, median (min–max); control: a second session of the plain graph against the first")  # fmt: skip
    print("| model_type | encoder.onnx attention fused | plain graph attention fused | plain rows/s "
          "| P=16 task rows/s | × plain (blocks' medians) | × plain per round | control × plain |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        runs, robust = r["runs"], r["robust"]
        per_round = bench.format_ratio(bench.round_ratio(runs, "task", "plain"), "plain")
        print(f"| {r['model_type']} | {r['encoder_fusions']} | {r['plain_fusions']} | {robust['plain']:.0f} "
              f"| {robust['task']:.0f} | {robust['task'] / robust['plain']:.2f} | {per_round} "
              f"| {robust['plain (control)'] / robust['plain']:.2f} |")  # fmt: skip
    print()
    for r in results:
        kind, ratio = r["model_type"], r["robust"]["task"] / r["robust"]["plain"]
        print(bench.verdict(f"task@{kind}", f"plain@{kind}", TARGET, ratio, f"{ratio:.2f} (blocks' medians)"))


def main() -> None:
    import random

    from tests.tiny import sentiment_rows, write_tsv

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kinds", nargs="*", default=[k for k in ARCHITECTURES if k != "camembert"])
    parser.add_argument("--size", choices=["tiny", "minilm"], default="tiny")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block", type=bench.positive, default=8, help="batches per block (default 8)")
    args = parser.parse_args()
    # ELECTRA without embeddings_project (ELECTRA-base's layout): export refuses ELECTRA-small's.
    size = Size(embedding=None) if args.size == "tiny" else MINILM
    rng = random.Random(7)
    texts = [" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(args.rows)]  # ~22 tokens each
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        train = write_tsv(work / "train.tsv", ["text", "label"], sentiment_rows(96, seed=1))
        results = [measure(kind, work, size, texts, train, args) for kind in args.kinds]
    report(results, args, size)


if __name__ == "__main__":
    main()
