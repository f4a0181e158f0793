"""Tuned parameters of every generator family, as the README's generator table gives them.

    python benchmarks/params.py                 # all-MiniLM-L6-v2's dims, P=16, 2 labels
    python benchmarks/params.py --prompt-length 8 --labels 4

Counted with IPTModel(...).tuned_parameter_count() (what `ipt-edge train` prints) on a BERT of
all-MiniLM-L6-v2's dimensions with random weights (only the shapes matter; nothing is downloaded).
The share is over the backbone's 22,713,216 parameters, pooler included, as `ipt-edge info` counts.
Needs the export extra (torch).
"""

from __future__ import annotations

import argparse

MINILM = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
          "intermediate_size": 1536, "max_position_embeddings": 512}  # fmt: skip


def counts(prompt_length: int = 16, labels: int = 2) -> tuple[int, dict[str, int]]:
    """(the backbone's parameters, {family: tuned parameters})."""
    import torch
    from transformers import BertConfig, BertModel

    from ipt_edge_export.model import GENERATORS, IPTConfig, IPTModel

    torch.manual_seed(0)
    backbone = BertModel(BertConfig(**MINILM))
    total = sum(p.numel() for p in backbone.parameters())
    names = [str(i) for i in range(labels)]
    return total, {
        kind: IPTModel(
            backbone, IPTConfig(generator=kind, prompt_length=prompt_length, labels=names)
        ).tuned_parameter_count()
        for kind in GENERATORS
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--labels", type=int, default=2)
    args = parser.parse_args()
    total, tuned = counts(args.prompt_length, args.labels)
    print(f"| kind | tuned parameters (share of {total:,}), P={args.prompt_length}, {args.labels} labels |")
    print("|---|---|")
    for kind, n in tuned.items():
        print(f"| `{kind}` | {n:,} ({n / total:.2%}) |")


if __name__ == "__main__":
    main()
