"""The Python runtime's side of js/bench/bench.mjs: prints one JSON line.

python js/bench/python_bench.py BUNDLE TEXTS_JSON TASK PRECISION THREADS ROUNDS
"""

import json
import statistics
import sys
import time

from ipt_edge import Bundle

bundle_dir, texts_file, task, precision, threads, rounds = sys.argv[1:7]
with open(texts_file, encoding="utf-8") as file:
    texts = json.load(file)
start = time.perf_counter()
bundle = Bundle.load(bundle_dir, precision=precision, threads=int(threads))
bundle.predict(texts[:1], task)
cold = time.perf_counter() - start
speeds = []
for _ in range(int(rounds)):
    t0 = time.perf_counter()
    labels = bundle.predict(texts, task, batch_size=32)
    speeds.append(len(texts) / (time.perf_counter() - t0))
print(json.dumps({"cold": cold, "rowsPerSecond": statistics.median(speeds), "labels": labels}))
