"""A bare in-process ``transformers`` pipeline on the same model and records: the baseline of the
serving benchmark.

    python bench/baseline_serve.py --model-dir RUN/models/MODEL --records R.jsonl --max-length 64 --result out.json

Throughput: ``pipeline(texts, batch_size=B)`` over all records (the text as the experiment's
encode builds it: title and text joined by ". ", truncated to MAX_LENGTH). Latency: one record
per call, one call after the other. No HTTP, no checks, nothing written but the result.
"""

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--latency-records", type=int, default=100)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    from transformers import pipeline

    records = [json.loads(line) for line in args.records.read_text().splitlines() if line.strip()]
    texts = [". ".join(p for p in (str(r.get("title") or "").strip(), str(r.get("text") or "").strip()) if p) for r in records]
    classify = pipeline("text-classification", model=str(args.model_dir), tokenizer=str(args.model_dir), top_k=None, device=-1)
    options = {"truncation": True, "max_length": args.max_length}
    classify(texts[:3], batch_size=args.batch_size, **options)  # warm-up, as the server's clients do
    t0 = time.perf_counter()
    out = classify(texts, batch_size=args.batch_size, **options)
    wall = time.perf_counter() - t0
    assert len(out) == len(texts)
    latencies = []
    for text in texts[: args.latency_records]:
        t1 = time.perf_counter()
        classify(text, **options)
        latencies.append(time.perf_counter() - t1)
    latencies.sort()
    args.result.write_text(json.dumps({
        "records": len(texts), "wall_s": wall, "records_per_s": len(texts) / wall,
        "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }))


if __name__ == "__main__":
    main()
