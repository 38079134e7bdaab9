"""Bare pyarrow: the same small records written as parquet shards of 100,000 rows, no checks.
The context row of the reconciliation benchmark (what streaming records to parquet costs at all).

    python bench/baseline_reconcile.py --records 1000000 --result out.json
"""

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402

SHARD_ROWS = 100_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="bench-bare-reconcile-") as out:
        buffer, shards = [], 0
        for record in bench_models.small_records(args.records):
            buffer.append(record)
            if len(buffer) >= SHARD_ROWS:
                pq.write_table(pa.Table.from_pylist(buffer), f"{out}/part-{shards:05d}.parquet")
                buffer.clear()
                shards += 1
        if buffer:
            pq.write_table(pa.Table.from_pylist(buffer), f"{out}/part-{shards:05d}.parquet")
    args.result.write_text(json.dumps({"records": args.records, "elapsed_s": time.perf_counter() - T0}))


if __name__ == "__main__":
    main()
