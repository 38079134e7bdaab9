"""What the console shows fits 80 columns, cuts nothing and prints text from the run literally."""

from __future__ import annotations

import io

from rich.console import Console

from ml_exp.pipeline.runs import runs_table
from ml_exp.pipeline.summary import summary_table

METRICS = {"accuracy": 0.91, "f1_macro": 0.875, "precision_weighted": 0.9, "recall_weighted": 0.91, "loss": 0.31}
MODELS = ["allenai/longformer-base-4096", "microsoft/deberta-v3-large", "tiny-bert[/x]"]


def render(table) -> str:
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(table)
    return out.getvalue()


def test_the_end_of_run_table_fits_80_columns_with_several_models():
    manifest = {"experiment": "EXP-3333-longformer", "run": 12, "status": "completed", "steps": {
        "training": {"metrics": {m: {**METRICS, "runtime": 1.0, "epoch": 3.0} for m in MODELS}},
        "inference": {"metrics": {m: dict(METRICS) for m in MODELS}}}}
    text = render(summary_table(manifest))
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    for model in MODELS:
        assert model in text  # the markup-like name is printed as it is
    assert "runtime" not in text and text.count("f1_macro") == 3 and "0.8750" in text


def test_the_runs_table_fits_80_columns_and_names_every_step():
    summaries = [{"run": n, "created_at": "2026-11-29T04:07:11.123+00:00", "status": "completed", "uri": "file:///x",
                  "steps": {"reconciliation": "completed", "preparation": "completed", "tuning": "failed",
                            "training": "running", "inference": "pending"},
                  "best": {"metric": "f1_macro", "value": 0.8123, "model": MODELS[0], "step": "inference"}} for n in (1, 12, 123)]
    text = render(runs_table("EXP-3333-longformer", summaries))
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert all(mark in text for mark in ("recon✓", "prep✓", "tune✗", "train▶", "infer·"))
    assert "2026-11-29 04:07" in text and "0.8123" in text
