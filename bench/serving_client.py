"""HTTP clients of the serving benchmark: ``--clients`` threads post the records to a running
``exp serve``, ``--per-request`` records a request, and time each request.

    python bench/serving_client.py --url http://127.0.0.1:P --records R.jsonl --clients 16 --per-request 1 --result out.json

Real clients (requests, a keep-alive session per thread) in their own process, so that the
server's process does only serving. Every answer is checked (one prediction per record).
"""

import argparse
import json
import threading
import time
from pathlib import Path

import requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--per-request", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N records")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    records = [json.loads(line) for line in args.records.read_text().splitlines() if line.strip()]
    if args.limit:
        records = records[: args.limit]
    chunks = [records[i:i + args.per_request] for i in range(0, len(records), args.per_request)]
    with requests.Session() as warm:  # the first requests pay one-off costs on both sides
        for chunk in chunks[:3]:
            warm.post(f"{args.url}/invocations", json=chunk, timeout=300).raise_for_status()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    todo = iter(chunks)

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    chunk = next(todo, None)
                if chunk is None:
                    return
                t0 = time.perf_counter()
                answer = session.post(f"{args.url}/invocations", json=chunk, timeout=300)
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if answer.status_code != 200 or len(answer.json()) != len(chunk):
                        errors.append(answer.text[:200])

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    latencies.sort()
    args.result.write_text(json.dumps({
        "records": len(records), "requests": len(chunks), "wall_s": wall, "records_per_s": len(records) / wall,
        "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }))


if __name__ == "__main__":
    main()
