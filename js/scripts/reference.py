"""Reference outputs of the Python runtime for the JavaScript parity tests (js/test/).

    python js/scripts/reference.py BUNDLE -o OUT.json [--precision fp32|int8]

Writes, for a fixed set of texts run through BUNDLE by ipt_edge.Bundle: each row's token ids and
type ids under its task's budget, whether it was truncated, its probabilities and label. Runs:
every task alone, and (bundles of several tasks) the rows spread over the tasks in mixed batches,
with two batch sizes. The texts hold accents, emoji, CJK (above U+FFFF too), Greek (a word-final
capital sigma), texts longer than the budget, and near-empty texts the Python runtime accepts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from pathlib import Path

from ipt_edge import Bundle

TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate clichés.",
    "Déjà vu: the café's crème brûlée was naïve, not über-good!",
    "ΟΔΥΣΣΕΥΣ ΚΑΙ ΣΟΦΟΣ. Η ΤΑΙΝΙΑ ΗΤΑΝ ΚΑΛΗ ΣΑΣ",
    "best film of the year 😀👍🏽🎬🍿 ❤️ 👩‍👩‍👧 🇫🇷",
    "这部电影很好看 映画はつまらない 영화가 좋아요",
    "𠀀𠀁𪚥 rare ideographs 𫝀𬺰 and compatibility ones 丽丽",
    "Le film était ennuyeux; ça n'a rien de génial.",
    "very good [MASK] film [CLS] [SEP] [PAD] [UNK] [MA SK]",
    "dull\u200b\u200dboring\u00adplot\ufeff \u061d\u166d\u1734 text",
    "x",
    ".",
    "\u200b",
    "\u0301",
    "\x00",
    "\ue000",
    " ".join(["the film was very good and the story was great"] * 30),
    "a superb cast " * 400,  # longer than the 4,096 characters from which long texts are cut
    "supercalifragilisticexpialidocious" * 10 + " good",
    "Mixed CASE Words İstanbul ǅemal ßtraße ﬁne Ⅻ ＦＵＬＬ ｗｉｄｔｈ",
]

PAIRS = [
    ("the film was good", "the movie was great"),
    ("a dull plot", "the story was boring and very dull"),
    ("Ο ΣΟΦΟΣ ΑΝΘΡΩΠΟΣ", "σοφός άνθρωπος"),
    ("这部电影很好看 𠀀", "emoji 😀 and accents é"),
    (" ".join(["the film was very good"] * 40), "short"),
    ("short", " ".join(["the story was boring"] * 40)),
    (" ".join(["a superb cast"] * 50), " ".join(["dull plot"] * 60)),
    ("\u200b", "x"),
    ("word " * 1000, "film " * 900),
]


def runs_for(bundle: Bundle) -> list[dict]:
    pair_tasks = [t for t in bundle.tasks if bundle.manifest.tasks[t].text_pair]
    single_tasks = [t for t in bundle.tasks if not bundle.manifest.tasks[t].text_pair]
    runs = []
    for task in bundle.tasks:
        texts = [list(p) for p in PAIRS] if task in pair_tasks else TEXTS
        runs.append({"name": f"{task} alone", "texts": texts, "tasks": [task] * len(texts), "batchSize": 32})
    if len(single_tasks) > 1:
        texts = TEXTS * 2
        tasks = [single_tasks[i % len(single_tasks)] for i in range(len(texts))]
        for batch_size in (32, 5):
            runs.append(
                {
                    "name": f"mixed tasks, batch {batch_size}",
                    "texts": texts,
                    "tasks": tasks,
                    "batchSize": batch_size,
                }
            )
    elif single_tasks:
        runs.append({"name": "batch 3", "texts": TEXTS, "tasks": single_tasks[0], "batchSize": 3})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8"))
    args = parser.parse_args()
    bundle = Bundle.load(args.bundle, precision=args.precision)
    runs = runs_for(bundle)
    for run in runs:
        texts = [tuple(t) if isinstance(t, list) else t for t in run["texts"]]
        names = [run["tasks"]] * len(texts) if isinstance(run["tasks"], str) else run["tasks"]
        encodings = [
            bundle.text_encoder(bundle.manifest.tasks[name].max_length).tokenize([text])[0]
            for text, name in zip(texts, names, strict=True)
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "N text(s) ... were truncated": recorded per row below
            result = bundle.run(texts, run["tasks"], batch_size=run["batchSize"])
        run["ids"] = [e.ids for e in encodings]
        run["typeIds"] = [e.type_ids for e in encodings]
        run["truncated"] = [bool(t) for t in result.truncated]
        run["probabilities"] = [[float(p) for p in row] for row in result.probabilities]
        run["labels"] = result.labels
    manifest = (args.bundle / "manifest.json").read_bytes()
    reference = {
        "bundle": args.bundle.name,
        "manifestSha256": hashlib.sha256(manifest).hexdigest(),
        "precision": args.precision,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reference, ensure_ascii=False) + "\n", encoding="utf-8")
    rows = sum(len(run["texts"]) for run in runs)
    print(f"{args.out}: {len(runs)} runs, {rows} rows ({args.bundle}, {args.precision})")


if __name__ == "__main__":
    main()
