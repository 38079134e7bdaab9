"""`make bench`'s long-document section (issue 11): what each DOCUMENT_STRATEGY reads of long
documents, how fast preparation and inference go through their tokens, and the memory it takes
as documents grow ten times longer.

The documents: shared filler words with, at the start, in the middle or at the end, one short
passage of words of the document's type (the only thing that tells the types apart). The same
records feed every measurement; the model is the bench's tiny BERT. Used by bench/run.py
(``--only long_documents``); its records come from :func:`documents` through bench/experiment.py
(``BENCH_RECORDS = long``).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from typing import Any

LABELS = ("audit_report", "contract", "invoice", "policy")
POSITIONS = ("start", "middle", "end")
PASSAGE = {  # a sentence of each type, its words found nowhere else
    "contract": "the supplier shall deliver the goods and either party may terminate this agreement with written notice",
    "audit_report": "we have audited the accompanying financial statements and obtained sufficient appropriate audit evidence",
    "policy": "violations of this policy may result in disciplinary action against employees and contractors",
    "invoice": "payment is due within thirty days please remit the total amount to the bank account below",
}
FILLER = ("the company board directors section four fiscal year ended december amounts stated in dollars page one "
          "twelve confidential proprietary information effective date first written above all any each such other "
          "report statement summary schedule appendix table figure note reference item period quarter annual").split()

PER_LABEL = 48  # documents per type: 192 in all, 16 per position and type
WORDS = 600  # words per document at 1x (about 700 MiniLM tokens); 10x for the memory measurement
MAX_LENGTH, STRIDE = 64, 8
EPOCHS, LEARNING_RATE = 6, "2e-3"


def documents(per_label: int, words: int, seed: int) -> Iterator[dict[str, Any]]:
    """``per_label`` documents of each type, ``words`` words long, the passage's position cycling
    start / middle / end (it is in the id: ``<type>-<position>-<k>``)."""
    rng = random.Random(seed)
    for label in LABELS:
        for k in range(per_label):
            position = POSITIONS[k % len(POSITIONS)]
            passage = PASSAGE[label].split()
            filler = rng.choices(FILLER, k=max(words - len(passage), 0))
            at = {"start": rng.randint(0, 8), "middle": len(filler) // 2 + rng.randint(-20, 20),
                  "end": max(len(filler) - rng.randint(0, 8), 0)}[position]
            text = " ".join(filler[:at] + passage + filler[at:])
            yield {"id": f"{label}-{position}-{k:04d}", "text": text, "label": label}


def accuracy_by_position(predictions: list[dict[str, Any]]) -> dict[str, float]:
    shares = {}
    for position in POSITIONS:
        rows = [p for p in predictions if p["id"].split("-")[-2] == position]
        shares[position] = sum(p["true_label"] == p["predicted_label"] for p in rows) / max(len(rows), 1)
    return shares


def run_section(bench: Any, say: Callable[[str], None], median: Callable[[list[float]], float]) -> None:
    """The section's rows in ``bench`` (a bench/run.py ``Bench``)."""
    import pyarrow.parquet as pq

    section = "7 long documents"
    say(f"long documents: {PER_LABEL * len(LABELS)} documents of {WORDS} words (passage at start / middle / end), "
        f"tiny BERT, MAX_LENGTH {MAX_LENGTH}; truncate, head_tail, chunks")

    def settings(strategy: str, words: int = WORDS) -> dict[str, str]:
        env = bench.settings("tiny-bert", max_length=MAX_LENGTH, records="long", n=PER_LABEL, words=words)
        env.update(DOCUMENT_STRATEGY=strategy, CHUNK_STRIDE=str(STRIDE), NUM_TRAIN_EPOCHS=str(EPOCHS), LEARNING_RATE=LEARNING_RATE,
                   SPLIT_RATIOS="0.5,0.25,0.25", EARLY_STOPPING_PATIENCE="0")
        return env

    runs = {}
    for strategy in ("truncate", "head_tail", "chunks"):
        got = bench.exp(f"long-{strategy}", ["run"], settings(strategy))
        num = bench.latest_run()
        predictions = pq.read_table(bench.run_dir(num) / "inference" / "tiny-bert" / "predictions.parquet").to_pylist()
        shares = accuracy_by_position(predictions)
        runs[strategy] = num
        coverage = bench.manifest(num)["steps"]["preparation"]["models"]["tiny-bert"]["documents"]["splits"]["test"]
        bench.value_row(section, f"test accuracy, {strategy} (start / middle / end: "
                        + " / ".join(f"{shares[p]:.2f}" for p in POSITIONS) + ")",
                        [sum(p["true_label"] == p["predicted_label"] for p in predictions) / len(predictions)], "accuracy",
                        ">= 0.9 at every position" if strategy == "chunks" else "",
                        (lambda v, s=shares: min(s.values()) >= 0.9) if strategy == "chunks" else None,
                        note=f"the model sees {100 * coverage['share_seen']:.0f}% of the test documents' tokens; run {got['wall_s']:.0f} s")

    # throughput and memory, chunks: preparation and inference at 1x and 10x the document length
    base = {"1x": runs["chunks"]}
    env10 = settings("chunks", words=10 * WORDS)
    base["10x"] = bench.base_run("long-10x", "reconciliation", env10)
    trained = bench.run_dir(runs["chunks"]) / "models"
    measured: dict[str, list[dict]] = {"1x": [], "10x": []}
    for rep in range(bench.reps):
        for scale in (("1x", "10x") if rep % 2 == 0 else ("10x", "1x")):
            env = settings("chunks") if scale == "1x" else env10
            num = bench.fork(base[scale], ("data/reconciled",), "preparation")
            prep = bench.exp(f"long-prepare-{scale}", ["run", "--run", str(num), "--steps", "preparation"], env)
            facts = bench.manifest(num)["steps"]["preparation"]
            splits = facts["models"]["tiny-bert"]["documents"]["splits"]
            tokens = _tokens(bench, num, "tiny-bert")
            test_tokens = _tokens(bench, num, "tiny-bert", "test")
            shutil.copytree(trained, bench.run_dir(num) / "models")
            infer = bench.exp(f"long-infer-{scale}", ["run", "--run", str(num), "--steps", "inference"], env)
            measured[scale].append({
                "prepare_tokens_per_s": tokens / bench.step_duration(num, "preparation"), "prepare_rss": prep["maxrss_mb"],
                "infer_tokens_per_s": test_tokens / bench.step_duration(num, "inference"), "infer_rss": infer["maxrss_mb"],
                "windows": splits["test"]["windows"],
            })
            say(f"long documents {scale} {rep + 1}/{bench.reps}: preparation {measured[scale][-1]['prepare_tokens_per_s']:,.0f} tokens/s, "
                f"{prep['maxrss_mb']:.0f} MB; inference {measured[scale][-1]['infer_tokens_per_s']:,.0f} tokens/s, {infer['maxrss_mb']:.0f} MB")
            bench.drop(num)
    bench.raw["long documents"] = measured
    for scale in ("1x", "10x"):
        words = WORDS if scale == "1x" else 10 * WORDS
        bench.value_row(section, f"preparation, chunks, documents of {words:,} words: tokens/s (step duration)",
                        [m["prepare_tokens_per_s"] for m in measured[scale]], "tokens/s", "", None)
        bench.value_row(section, f"inference, chunks, documents of {words:,} words: tokens/s (step duration)",
                        [m["infer_tokens_per_s"] for m in measured[scale]], "tokens/s", "", None,
                        note=f"{measured[scale][0]['windows']} test windows")
    for step, key in (("preparation", "prepare_rss"), ("inference", "infer_rss")):
        one, ten = median([m[key] for m in measured["1x"]]), median([m[key] for m in measured["10x"]])
        bench.rows.append({
            "section": section, "measurement": f"peak RSS of the {step} step, documents 10x longer (chunks)", "unit": "MB",
            "baseline": "the same step at 1x", "ml_exp": ten, "baseline_value": one, "ratio": ten / one,
            "ratios": [b[key] / a[key] for a, b in zip(measured["1x"], measured["10x"])], "goal": "<= 1.2", "met": ten / one <= 1.2,
            "ratio_kind": "10x / 1x", "note": "",
        })


def _tokens(bench: Any, num: int, model: str, split: str | None = None) -> int:
    """Tokens of the documents of a prepared run (all splits, or one), from its document_tokens column."""
    import datasets
    import numpy as np

    data = datasets.load_from_disk(str(bench.run_dir(num) / "data" / "prepared" / model))
    total = 0
    for name, part in data.items():
        if split is None or name == split:
            table = part.with_format(None).data
            first = np.asarray(table.column("window").to_numpy()) == 0
            total += int(np.asarray(table.column("document_tokens").to_numpy())[first].sum())
    return total
