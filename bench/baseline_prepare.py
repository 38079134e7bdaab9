"""Bare ``datasets.map(batched=True)`` tokenization of reconciled records: the baseline of the
preparation benchmark.

    python bench/baseline_prepare.py --reconciled RUN/data/reconciled --max-length 64 --result out.json

Reads the same parquet shards ml-exp's preparation step reads, tokenizes title + ". " + text
with the same tokenizer and truncation (one process, the fast tokenizer's own threads), and
saves the result with ``save_to_disk``. No split, no checks.
"""

import time

T0 = time.perf_counter()  # before the heavy imports: ml-exp's step duration includes them too

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reconciled", type=Path, required=True)
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    import datasets

    with tempfile.TemporaryDirectory(prefix="bench-bare-prepare-") as scratch:
        shards = sorted(str(p) for p in args.reconciled.glob("part-*.parquet"))
        raw = datasets.Dataset.from_parquet(shards, cache_dir=str(Path(scratch) / "cache"))
        tokenizer = bench_models.load_tokenizer()

        def encode(batch):
            texts = [f"{title}. {text}" for title, text in zip(batch["title"], batch["text"])]
            return tokenizer(texts, truncation=True, max_length=args.max_length)

        encoded = raw.map(encode, batched=True, remove_columns=["title", "text"])
        encoded.save_to_disk(str(Path(scratch) / "encoded"))
        rows = len(encoded)
    args.result.write_text(json.dumps({"records": rows, "elapsed_s": time.perf_counter() - T0}))


if __name__ == "__main__":
    main()
