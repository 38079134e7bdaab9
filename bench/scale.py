"""`make bench`'s scale section (issue 22 item 5): preparation of short records at 100,000 and at
1,000,000, the second's peak memory against the first's (flat memory: datasets maps and writes in
batches, so ten times the records should not take ten times the memory). The records are the
reconciliation section's small ones (bench_models.small_records: an id, a short text, a label);
the tokenizer is the bench's tiny BERT's. Used by bench/run.py (``--only scale``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SIZES = (100_000, 1_000_000)


def run_section(bench: Any, say: Callable[[str], None], median: Callable[[list[float]], float]) -> None:
    """The section's rows in ``bench`` (a bench/run.py ``Bench``)."""
    section = "8 scale, short records"
    measured: dict[int, list[dict[str, float]]] = {}
    for n in SIZES:
        env = bench.settings("tiny-bert", records="small", n=n)
        base = bench.base_run(f"scale-{n}", "reconciliation", env)
        measured[n] = []
        for rep in range(bench.reps):
            num = bench.fork(base, ("data",), "preparation")
            got = bench.exp(f"scale-prepare-{n}", ["run", "--run", str(num), "--steps", "preparation"], env)
            seconds = bench.step_duration(num, "preparation")
            measured[n].append({"records_per_s": n / seconds, "rss_mb": got["maxrss_mb"], "wall_s": got["wall_s"],
                                "anon_mb": got["anon_mb"], "file_mb": got["file_mb"]})
            say(f"scale: preparation of {n:,} records {rep + 1}/{bench.reps}: {n / seconds:,.0f} records/s, "
                f"peak RSS {got['maxrss_mb']:.0f} MB (anonymous {got['anon_mb']:.0f} MB, file-backed {got['file_mb']:.0f} MB)")
            bench.drop(num)
        bench.drop(base)
        bench.value_row(section, f"preparation of {n:,} short records: records/s (step duration)",
                        [m["records_per_s"] for m in measured[n]], "records/s", "", None,
                        note=f"peak RSS {median([m['rss_mb'] for m in measured[n]]):.0f} MB")
    small, large = (median([m["rss_mb"] for m in measured[n]]) for n in SIZES)
    bench.raw["scale"] = {str(n): values for n, values in measured.items()}
    bench.rows.append({
        "section": section, "measurement": f"peak RSS of the preparation step, {SIZES[1]:,} records", "unit": "MB",
        "baseline": f"the same step, {SIZES[0]:,} records", "ml_exp": large, "baseline_value": small,
        "ratio": large / small, "ratios": [b["rss_mb"] / a["rss_mb"] for a, b in zip(measured[SIZES[0]], measured[SIZES[1]])],
        "goal": "<= 1.2", "met": large / small <= 1.2, "ratio_kind": "1M / 100k", "note": "flat memory",
    })
    # the heap alone: RSS also counts the pages of memory-mapped Arrow files that datasets reads
    # (the encoded splits as they are saved), which the kernel can drop under pressure
    small, large = (median([m["anon_mb"] for m in measured[n]]) for n in SIZES)
    bench.rows.append({
        "section": section, "measurement": f"peak anonymous memory (heap) of the preparation step, {SIZES[1]:,} records",
        "unit": "MB", "baseline": f"the same step, {SIZES[0]:,} records", "ml_exp": large, "baseline_value": small,
        "ratio": large / small, "ratios": [b["anon_mb"] / a["anon_mb"] for a, b in zip(measured[SIZES[0]], measured[SIZES[1]])],
        "goal": "<= 1.2", "met": large / small <= 1.2, "ratio_kind": "1M / 100k",
        "note": "file-backed pages (peak): " + ", ".join(f"{median([m['file_mb'] for m in measured[n]]):.0f} MB at {n:,}" for n in SIZES),
    })
