"""The Rust tokenizer's side of the JavaScript tokenizer checks (used by js/scripts and js/test).

    python js/scripts/rust_tokenizer.py classes TOKENIZER_JSON      one JSON line per code point:
        [cp, normalized "a<c>b", pre-tokens of it]   (what unicode_table.mjs diffs against JS)
    python js/scripts/rust_tokenizer.py ids TOKENIZER_JSON TEXTS_JSON OUT_JSON
        ids of each text (a string, or [text, pair]), no special tokens and no truncation
    python js/scripts/rust_tokenizer.py encode TOKENIZER_JSON CASES_JSON OUT_JSON
        each case {"text", "maxLength"} through the Python runtime's own tokenization
        (ipt_edge.tokenizer.BundleTokenizer): [ids, type_ids, truncated]

Code points: all of them but surrogates (Python refuses those in texts).
"""

import json
import sys

from tokenizers import Tokenizer


def code_points():
    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def main() -> None:
    command, path = sys.argv[1], sys.argv[2]
    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    out = sys.stdout
    if command == "classes":
        for cp in code_points():
            text = tokenizer.normalizer.normalize_str("a" + chr(cp) + "b")
            words = [w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text)]
            out.write(json.dumps([cp, text, words], ensure_ascii=False) + "\n")
    elif command == "ids":
        with open(sys.argv[3], encoding="utf-8") as file:
            texts = [t if isinstance(t, str) else tuple(t) for t in json.load(file)]
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        with open(sys.argv[4], "w", encoding="utf-8") as file:
            json.dump([e.ids for e in encodings], file)
    elif command == "encode":
        from ipt_edge.tokenizer import BundleTokenizer

        results, encoders = [], {}
        with open(sys.argv[3], encoding="utf-8") as file:
            cases = json.load(file)
        for case in cases:
            text = case["text"] if isinstance(case["text"], str) else tuple(case["text"])
            budget = case["maxLength"]
            if budget not in encoders:
                encoders[budget] = BundleTokenizer(path, budget)
            batch = encoders[budget].encode([text])
            results.append(
                [batch.input_ids[0].tolist(), batch.token_type_ids[0].tolist(), bool(batch.truncated[0])]
            )
        with open(sys.argv[4], "w", encoding="utf-8") as file:
            json.dump(results, file)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
