"""Bare ``datasets.map(batched=True)`` tokenization of reconciled records: the baseline of the
preparation benchmark.

    python bench/baseline_prepare.py --reconciled RUN/data/reconciled --max-length 64 --result out.json \
        [--stride 32]

Reads the same parquet shards ml-exp's preparation step reads, tokenizes title + ". " + text
with the same tokenizer and truncation (one process, the fast tokenizer's own threads), and
saves the result with ``save_to_disk``. No split, no checks. With ``--stride``: windows of
``--max-length`` tokens overlapping by the stride, a row each (what DOCUMENT_STRATEGY = chunks
makes), as a user would write it with the tokenizer's overflow.

Also records ``tokenizer_s``: the same texts through the tokenizer alone, in batches of 1000,
after the map (warm): the tokenizer's own throughput, the ceiling of any preparation.
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
    parser.add_argument("--stride", type=int, default=None, help="windows overlapping by this many tokens (chunks)")
    args = parser.parse_args()

    import datasets

    with tempfile.TemporaryDirectory(prefix="bench-bare-prepare-") as scratch:
        shards = sorted(str(p) for p in args.reconciled.glob("part-*.parquet"))
        raw = datasets.Dataset.from_parquet(shards, cache_dir=str(Path(scratch) / "cache"))
        tokenizer = bench_models.load_tokenizer()

        windows = {} if args.stride is None else {"stride": args.stride, "return_overflowing_tokens": True}

        def encode(batch):
            texts = [f"{title}. {text}" for title, text in zip(batch["title"], batch["text"])]
            encoded = tokenizer(texts, truncation=True, max_length=args.max_length, **windows)
            if args.stride is not None:  # one row per window, with its record's id and label
                owners = encoded.pop("overflow_to_sample_mapping")
                return {**encoded, "id": [batch["id"][o] for o in owners], "label": [batch["label"][o] for o in owners]}
            return encoded

        encoded = raw.map(encode, batched=True, remove_columns=raw.column_names if windows else ["title", "text"])
        encoded.save_to_disk(str(Path(scratch) / "encoded"))
        rows = len(encoded)
        elapsed = time.perf_counter() - T0

        texts = [f"{title}. {text}" for title, text in zip(raw["title"], raw["text"])]
        started = time.perf_counter()
        for first in range(0, len(texts), 1000):
            tokenizer(texts[first : first + 1000], truncation=True, max_length=args.max_length, **windows)
        tokenizer_s = time.perf_counter() - started
    args.result.write_text(json.dumps({"records": rows, "elapsed_s": elapsed, "tokenizer_s": tokenizer_s}))


if __name__ == "__main__":
    main()
