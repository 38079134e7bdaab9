"""Inference testing (ml_exp.steps.inference) and the model comparison report (ml_exp.steps.report).

Real artefacts, built in well under a second: a tiny BERT from a config, a WordPiece tokenizer
trained with ``tokenizers``, a DatasetDict saved with ``save_to_disk``, in a real file:// run.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from ml_exp import toolkit
from ml_exp.config import load_config
from ml_exp.experiment.context import Context
from ml_exp.storage.layout import LABELS, inference_dir, model_dir, prepared_dir
from ml_exp.core.errors import StepError, UserError
from ml_exp.steps import inference
from ml_exp.steps.report import write_report
from ml_exp.storage.store import OutputExistsError, Store
from ml_exp.experiment.functions import Functions
from tests.tiny_tokenizer import wordpiece_tokenizer

LABEL_NAMES = ["contract", "audit", "policy"]
WORDS = {
    "contract": "contract signed party terms clause agreement",
    "audit": "audit report finances balance review findings",
    "policy": "policy remote work rules staff security",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVAL_BATCH = 4
N_TEST = 30  # several batches (and, with small row groups, several Parquet row groups)


@pytest.fixture(scope="module", autouse=True)
def offline_hf(tmp_path_factory):
    os.environ.setdefault("HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")


# --- artefacts ---------------------------------------------------------------------------------


def _records(n: int, seed: int, prefix: str) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    ids, texts, labels = [], [], []
    for i in range(n):
        label = int(rng.integers(0, len(LABEL_NAMES)))
        words = WORDS[LABEL_NAMES[label]].split()
        # rows of different lengths, and batches whose longest rows differ (padding per batch)
        length = 1 + int(rng.integers(0, 1 + (i // EVAL_BATCH) % 6))
        ids.append(f"{prefix}-{i:04d}")
        texts.append(" ".join(rng.choice(words, size=length)))
        labels.append(label)
    return {"id": ids, "text": texts, "label": labels}


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    """A saved tokenizer, two saved tiny models (different seeds) and a saved prepared DatasetDict."""
    import datasets
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("artefacts")
    tokenizer = wordpiece_tokenizer(list(WORDS.values()) * 5, vocab_size=100)

    model_dirs = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=64,
            num_labels=len(LABEL_NAMES),
            id2label=dict(enumerate(LABEL_NAMES)),
            label2id={n: i for i, n in enumerate(LABEL_NAMES)},
        )
        folder = root / f"model-{seed}"
        BertForSequenceClassification(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "labels.json").write_text(json.dumps(LABEL_NAMES))
        model_dirs[seed] = folder

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=LABEL_NAMES),
        }
    )
    splits = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(_records(n, seed, split), features=features)
            for split, n, seed in (("train", 12, 1), ("validation", 6, 2), ("test", N_TEST, 3))
        }
    )
    encoded = splits.map(
        lambda b: toolkit.tokenizer_encode(b, tokenizer, None, max_length=48), batched=True, remove_columns=["text"]
    )
    prepared = root / "prepared"
    encoded.save_to_disk(str(prepared))
    return {"models": model_dirs, "prepared": prepared, "tokenizer": tokenizer, "test": encoded["test"]}


def make_ctx(tmp_path: Path, models=("tiny-bert",), **settings) -> Context:
    lines = {
        "EXPERIMENT_NAME": "EXP-1-t",
        "MODEL_NAMES": ",".join(models),
        "STORAGE_URI": "file://store",
        "WANDB_MODE": "disabled",
        "PER_DEVICE_EVAL_BATCH_SIZE": str(EVAL_BATCH),
        "MAX_LENGTH": "48",
        **settings,
    }
    (tmp_path / "settings.ini").write_text("[settings]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items()))
    config = load_config(tmp_path, environ={})
    run = Store(config.storage_uri, config.experiment_name).claim_run(None, {"steps": {}})
    return Context(config=config, run=run)


def publish(ctx: Context, artefacts, model_name: str, seed: int = 0) -> None:
    """What the preparation and training steps leave in the run for ``model_name``."""
    run = ctx.run
    if not run.exists(LABELS):
        run.write_json(LABELS, LABEL_NAMES)
    run.put_dir(str(artefacts["prepared"]), prepared_dir(model_name))
    run.put_dir(str(artefacts["models"][seed]), model_dir(model_name))


def user_metrics(predictions, references, labels, ctx):
    return toolkit.classification_metrics(predictions, references, labels)


def make_udfs(compute_metrics=user_metrics) -> Functions:
    def unused(*args):
        raise AssertionError("inference must not call this function")

    return Functions(
        module=None,
        reconcile=unused,
        load_processor=unused,
        encode=unused,
        load_model=unused,
        compute_metrics=compute_metrics,
    )


@pytest.fixture
def ctx(tmp_path, artefacts):
    context = make_ctx(tmp_path)
    publish(context, artefacts, "tiny-bert")
    return context


# --- inference -----------------------------------------------------------------------------------


def test_inference_writes_predictions_metrics_report_and_confusion_matrix(ctx, artefacts):
    result = inference.infer_model(ctx, make_udfs(), "tiny-bert")
    run, folder = ctx.run, inference_dir("tiny-bert")
    assert run.is_complete(folder)
    assert result["test_records"] == N_TEST
    assert result["uri"] == run.path(folder)
    local = Path(run.local_path_or_url(folder))
    assert {
        "predictions.parquet",
        "predictions.csv",
        "metrics.json",
        "classification_report.json",
        "confusion_matrix.json",
        "confusion_matrix.png",
    } <= set(os.listdir(local))

    # predictions: one row per test record, same ids, label names, probabilities summing to 1
    table = pq.read_table(local / "predictions.parquet").to_pydict()
    score_columns = [f"score_{name}" for name in LABEL_NAMES]
    assert list(table) == [
        "id",
        "true_label",
        "predicted_label",
        *score_columns,
        "windows",
        "evidence_window",
        "evidence_start",
        "evidence_end",
        "evidence_page",
    ]
    assert table["id"] == artefacts["test"]["id"]
    assert table["true_label"] == [LABEL_NAMES[i] for i in artefacts["test"]["label"]]
    scores = np.array([table[c] for c in score_columns]).T
    assert scores.shape == (N_TEST, len(LABEL_NAMES))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert [LABEL_NAMES[i] for i in scores.argmax(axis=1)] == table["predicted_label"]
    with open(local / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == table["id"]
    assert [r["predicted_label"] for r in rows] == table["predicted_label"]
    np.testing.assert_allclose([[float(r[c]) for c in score_columns] for r in rows], scores, atol=1e-5)

    # metrics: the user's compute_metrics, returned and stored, equal to sklearn on the predictions
    metrics = json.loads((local / "metrics.json").read_text())
    assert metrics == result["metrics"]
    preds = [LABEL_NAMES.index(p) for p in table["predicted_label"]]
    refs = [LABEL_NAMES.index(t) for t in table["true_label"]]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    for average in ("macro", "micro", "weighted"):
        p, r, f1, _ = precision_recall_fscore_support(refs, preds, labels=[0, 1, 2], average=average, zero_division=0)
        assert (
            metrics[f"precision_{average}"],
            metrics[f"recall_{average}"],
            metrics[f"f1_{average}"],
        ) == pytest.approx((p, r, f1))

    # per-class report and confusion matrix agree with the predictions
    report = json.loads((local / "classification_report.json").read_text())
    assert set(LABEL_NAMES) <= set(report)
    assert [report[name]["support"] for name in LABEL_NAMES] == [refs.count(i) for i in range(3)]
    cm = json.loads((local / "confusion_matrix.json").read_text())
    assert cm["labels"] == LABEL_NAMES
    matrix = np.array(cm["matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == N_TEST
    expected = np.zeros((3, 3), dtype=int)
    np.add.at(expected, (refs, preds), 1)
    np.testing.assert_array_equal(matrix, expected)
    png = (local / "confusion_matrix.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 2000


def test_inference_streams_batches_and_row_groups(ctx, artefacts, monkeypatch):
    """Memory stays flat: forward passes of at most one eval batch, each padded to its own longest
    row, and the predictions leave in several Parquet row groups, not one table at the end."""
    from transformers import BertForSequenceClassification

    seen = []
    original = BertForSequenceClassification.forward

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        seen.append(tuple(kwargs["input_ids"].shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BertForSequenceClassification, "forward", spy)
    monkeypatch.setattr(inference, "PARQUET_ROWS_PER_GROUP", 8)
    writes = []
    import pyarrow.parquet

    original_write = pyarrow.parquet.ParquetWriter.write_table
    monkeypatch.setattr(
        pyarrow.parquet.ParquetWriter,
        "write_table",
        lambda self, table, *a, **k: (writes.append(table.num_rows), original_write(self, table, *a, **k))[1],
    )

    monkeypatch.setattr(inference, "BATCHES_PER_BLOCK", 2)
    inference.infer_model(ctx, make_udfs(), "tiny-bert")

    assert len(seen) == math.ceil(N_TEST / EVAL_BATCH)
    assert all(rows <= EVAL_BATCH for rows, _ in seen) and sum(rows for rows, _ in seen) == N_TEST
    lengths = [len(ids) for ids in artefacts["test"]["input_ids"]]
    block = 2 * EVAL_BATCH  # read a block at a time, scored longest rows first
    per_batch_max = [
        width for i in range(0, N_TEST, block) for width in sorted(lengths[i : i + block], reverse=True)[::EVAL_BATCH]
    ]
    assert [width for _, width in seen] == per_batch_max  # padded per batch, not to a global length
    assert len(set(per_batch_max)) > 1
    parquet = pq.ParquetFile(Path(ctx.run.local_path_or_url(inference_dir("tiny-bert"))) / "predictions.parquet")
    assert parquet.metadata.num_row_groups == len(writes) == math.ceil(N_TEST / 8)
    assert parquet.metadata.num_rows == N_TEST
    assert max(writes) == 8


def test_failing_compute_metrics_is_a_step_error(ctx):
    def broken(predictions, references, labels, ctx):
        raise KeyError("f1")

    with pytest.raises(StepError, match=r"compute_metrics raised KeyError.*'tiny-bert'"):
        inference.infer_model(ctx, make_udfs(broken), "tiny-bert")
    assert not ctx.run.is_complete(inference_dir("tiny-bert"))  # nothing half-written


def test_compute_metrics_must_return_numbers(ctx):
    with pytest.raises(StepError, match=r"compute_metrics returned 'f1' = 'high'"):
        inference.infer_model(ctx, make_udfs(lambda p, r, labels, ctx: {"f1": "high"}), "tiny-bert")


def test_second_inference_into_the_same_run_refuses_to_overwrite(ctx):
    first = inference.infer_model(ctx, make_udfs(), "tiny-bert")
    stored = (Path(ctx.run.local_path_or_url(inference_dir("tiny-bert"))) / "metrics.json").read_text()
    with pytest.raises(OutputExistsError, match="refusing to overwrite"):
        inference.infer_model(ctx, make_udfs(lambda *a: pytest.fail("must refuse before computing")), "tiny-bert")
    assert json.loads(stored) == first["metrics"]
    assert (Path(ctx.run.local_path_or_url(inference_dir("tiny-bert"))) / "metrics.json").read_text() == stored


def test_load_result_reads_back_what_inference_returned(ctx):
    result = inference.infer_model(ctx, make_udfs(), "tiny-bert")
    assert inference.load_result(ctx.run, "tiny-bert") == {k: v for k, v in result.items() if k != "tracking"}
    with pytest.raises(UserError, match="inference/other.*missing or incomplete"):
        inference.load_result(ctx.run, "other")


def test_the_store_itself_refuses_a_second_inference_folder(ctx, monkeypatch):
    """Even past the early check (e.g. two concurrent inferences), put_dir refuses."""
    inference.infer_model(ctx, make_udfs(), "tiny-bert")
    run = ctx.run
    calls = {"n": 0}
    original = type(run).is_complete

    def first_call_says_missing(self, relpath):
        if relpath == inference_dir("tiny-bert"):
            calls["n"] += 1
            if calls["n"] == 1:
                return False
        return original(self, relpath)

    monkeypatch.setattr(type(run), "is_complete", first_call_says_missing)
    with pytest.raises(OutputExistsError):
        inference.infer_model(ctx, make_udfs(), "tiny-bert")
    assert calls["n"] == 2  # the early check, then put_dir's own


def test_missing_model_is_a_step_error(tmp_path, artefacts):
    context = make_ctx(tmp_path)
    context.run.write_json(LABELS, LABEL_NAMES)
    context.run.put_dir(str(artefacts["prepared"]), prepared_dir("tiny-bert"))
    with pytest.raises(UserError, match=r"models/tiny-bert.*missing or incomplete"):
        inference.infer_model(context, make_udfs(), "tiny-bert")


def test_label_maps_that_disagree_are_a_step_error(ctx):
    ctx.run.write_json(LABELS, ["policy", "audit", "contract"], overwrite=True)
    with pytest.raises(StepError, match="label map"):
        inference.infer_model(ctx, make_udfs(), "tiny-bert")


def test_inference_logs_to_wandb_offline(tmp_path, artefacts, monkeypatch):
    for var, sub in (
        ("WANDB_CONFIG_DIR", "wandb-config"),
        ("WANDB_CACHE_DIR", "wandb-cache"),
        ("WANDB_DATA_DIR", "wandb-data"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    context = make_ctx(tmp_path, WANDB_MODE="offline", WANDB_PROJECT="ml-exp-tests")
    publish(context, artefacts, "tiny-bert")
    inference.infer_model(context, make_udfs(), "tiny-bert")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    images = list(media.glob("images/**/*.png"))
    tables = list(media.glob("table/**/*.table.json"))
    assert images and images[0].read_bytes().startswith(PNG_MAGIC)
    assert tables
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["label", "precision", "recall", "f1-score", "support"]
    assert [row[0] for row in table["data"]] == LABEL_NAMES


# --- report ----------------------------------------------------------------------------------------


def test_report_compares_two_real_models(tmp_path, artefacts):
    names = ("tiny-bert", "org/tiny-bert-b")
    context = make_ctx(tmp_path, models=names, METRIC_FOR_BEST_MODEL="accuracy")
    results = {}
    for seed, name in enumerate(names):
        publish(context, artefacts, name, seed=seed)
        results[name] = inference.infer_model(context, make_udfs(), name)
    accuracies = {name: results[name]["metrics"]["accuracy"] for name in names}
    # two random inits rarely tie; when they do the first listed model wins
    expected_best = max(names, key=lambda n: accuracies[n])

    summary = write_report(context, results)
    run = context.run
    assert summary == {"best_model": expected_best, "metric": "accuracy", "value": accuracies[expected_best]}
    comparison = run.read_json("comparison.json")
    assert comparison["metric"] == "accuracy" and comparison["best_model"] == expected_best
    assert comparison["models"] == {name: results[name]["metrics"] for name in names}
    report = run.read_text("report.md")
    for name in names:
        assert name in report and f"({inference_dir(name)}/)" in report
    assert f"**{expected_best}**" in report
    assert "EXP-1-t" in report and f"run {run.num}" in report
    assert run.read_bytes("comparison.png").startswith(PNG_MAGIC)


def test_report_picks_the_better_model_and_marks_it(tmp_path):
    context = make_ctx(tmp_path, models=("a", "b"))
    results = {
        "a": {"metrics": {"f1_macro": 0.61, "accuracy": 0.90}, "test_records": 10, "uri": "file:///x/inference/a"},
        "b": {"metrics": {"f1_macro": 0.74, "accuracy": 0.80}, "test_records": 10, "uri": "file:///x/inference/b"},
    }
    assert write_report(context, results) == {"best_model": "b", "metric": "f1_macro", "value": 0.74}
    comparison = context.run.read_json("comparison.json")
    assert comparison["best_model"] == "b" and comparison["models"]["a"]["accuracy"] == 0.90
    table = [line for line in context.run.read_text("report.md").splitlines() if line.startswith("| ")]
    header, rows = table[0], table[1:]
    assert header.split("|")[2].strip() == "f1_macro"  # the main metric first
    assert rows[1].startswith("| **b** | **0.7400** | **0.8000** |") and rows[0].startswith("| a | 0.6100 | 0.9000 |")
    # rebuilt report: writing it again replaces it
    results["a"]["metrics"]["f1_macro"] = 0.99
    assert write_report(context, results)["best_model"] == "a"
    assert context.run.read_json("comparison.json")["best_model"] == "a"


def test_report_loss_is_lower_is_better_and_missing_metric_is_named(tmp_path):
    context = make_ctx(tmp_path, models=("a", "b"), METRIC_FOR_BEST_MODEL="eval_loss")
    results = {"a": {"metrics": {"eval_loss": 0.3}}, "b": {"metrics": {"eval_loss": 0.2}}}
    assert write_report(context, results)["best_model"] == "b"
    with pytest.raises(StepError, match=r"METRIC_FOR_BEST_MODEL = eval_loss.*accuracy"):
        write_report(context, {"a": {"metrics": {"accuracy": 0.5}}})


def test_without_a_saved_tokenizer_inputs_must_have_equal_lengths(tmp_path, artefacts):
    import shutil

    import datasets

    bare = tmp_path / "bare-model"
    shutil.copytree(
        artefacts["models"][0],
        bare,
        ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json", "vocab.txt"),
    )
    (tmp_path / "ragged-exp").mkdir()
    ragged = make_ctx(tmp_path / "ragged-exp", models=("bare",))
    ragged.run.write_json(LABELS, LABEL_NAMES)
    ragged.run.put_dir(str(artefacts["prepared"]), prepared_dir("bare"))
    ragged.run.put_dir(str(bare), model_dir("bare"))
    with pytest.raises(StepError, match="different lengths and no tokenizer"):
        inference.infer_model(ragged, make_udfs(), "bare")

    # encoded with fixed-length padding (what encode() must do for a model saved without one): fine
    tokenizer = artefacts["tokenizer"]
    fixed = datasets.load_from_disk(str(artefacts["prepared"])).map(
        lambda b: tokenizer.pad({"input_ids": b["input_ids"]}, padding="max_length", max_length=48), batched=True
    )
    fixed.save_to_disk(str(tmp_path / "fixed"))
    (tmp_path / "even-exp").mkdir()
    even = make_ctx(tmp_path / "even-exp", models=("bare",))
    even.run.write_json(LABELS, LABEL_NAMES)
    even.run.put_dir(str(tmp_path / "fixed"), prepared_dir("bare"))
    even.run.put_dir(str(bare), model_dir("bare"))
    result = inference.infer_model(even, make_udfs(), "bare")
    assert result["test_records"] == N_TEST


def test_csv_cells_that_start_like_a_formula_are_neutralised_and_parquet_keeps_them():
    """OWASP's CSV injection: ids and labels starting with = + - @ tab or CR get a leading '."""
    import csv
    import io

    import pyarrow as pa

    from ml_exp.steps.inference_outputs import csv_column

    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "plain", "a=b"]
    table = pa.table({"id": hostile, "score": [-0.5] * len(hostile), "window": [-1] * len(hostile)})
    buffer = io.StringIO()
    csv.writer(buffer).writerows(zip(*(csv_column(table.column(i)) for i in range(table.num_columns))))
    cells = [row[0] for row in csv.reader(io.StringIO(buffer.getvalue()))]
    assert cells == ["'" + h for h in hostile[:6]] + ["plain", "a=b"]
    assert [row[1:] for row in csv.reader(io.StringIO(buffer.getvalue()))][0] == ["-0.5", "-1"]  # numbers stay numbers
    assert table.column("id").to_pylist() == hostile  # what parquet and JSON hold: the original


@pytest.mark.parametrize("label", ["$5 or $6", "$\\frac{$", "$x^$", "\\$ \\\\ $$", "a" * 500, "two\nlines"])
def test_labels_that_matplotlib_would_read_as_math_are_drawn_as_text(label):
    """A label with $...$ crashed inference in mathtext (and could never be resumed); every PNG
    draws text literally, a long label cut."""
    from ml_exp.pipeline.compare import comparison_png as runs_png
    from ml_exp.steps.report import comparison_png, confusion_matrix_png
    from ml_exp.steps.report_html import training_curves_png

    labels = [label, "plain"]
    for png in (
        confusion_matrix_png([[1, 0], [0, 1]], labels, title=label),
        comparison_png({label: 0.5, "b": 0.7}, label, "b", title=label),
        training_curves_png(
            [{"epoch": 1, "loss": 1.0}, {"epoch": 1, "eval_loss": 0.9, f"eval_{label}": 0.5}], label, label
        ),
        runs_png({"metric": label, "runs": [{"run": 1, "models": {label: {"value": 0.5}}}]}, label),
    ):
        assert png[:4] == b"\x89PNG"


def test_a_dollar_label_is_drawn_with_its_dollars():
    from matplotlib.figure import Figure

    from ml_exp.toolkit.plots import literal_text

    @literal_text
    def drawn(text):
        figure = Figure()
        return figure.text(0, 0, text)._preprocess_math(text)

    assert drawn("$5 or $6") == ("$5 or $6", False)  # not math: "5or6" was drawn before


def test_report_names_the_page_or_characters_that_decided_each_document(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    context = make_ctx(tmp_path, models=("pages", "chars", "plain"))
    columns = {
        "pages": {"evidence_page": [2, 1], "evidence_start": [None, None], "evidence_end": [None, None]},
        "chars": {"evidence_page": [None, None], "evidence_start": [0, 512], "evidence_end": [480, 990]},
        "plain": {"evidence_page": [None, None], "evidence_start": [None, None], "evidence_end": [None, None]},
    }
    for name, evidence in columns.items():
        table = pa.table(
            {"id": ["d|1", "d2"], "true_label": ["a", "b"], "predicted_label": ["a", "a"], "windows": [3, 2]}
            | {k: pa.array(v, pa.int32()) for k, v in evidence.items()}
        )
        sink = io.BytesIO()
        pq.write_table(table, sink)
        context.run.write_bytes(f"{inference_dir(name)}/predictions.parquet", sink.getvalue())
    results = {name: {"metrics": {"f1_macro": 0.5}, "test_records": 2, "uri": ""} for name in columns}
    write_report(context, results)
    report = context.run.read_text("report.md")
    pages, chars, plain = (report.split(f"## {name}")[1].split("## ")[0] for name in columns)
    assert "| d\\|1 | a | a | page 2 | 3 |" in pages and "| d2 | b | a | page 1 | 2 |" in pages
    assert "| d2 | b | a | characters 512–990 | 2 |" in chars
    assert "Evidence" not in plain  # nothing to say: no window named


def test_on_a_gpu_inference_batches_fill_the_first_batchs_tokens_in_order():
    """length_batches: rows sorted longest first; on CPU PER_DEVICE_EVAL_BATCH_SIZE rows a batch,
    on a GPU as many rows as fit the first batch's padded tokens (capped), each row scored once
    and its scores written back in the block's own order."""
    from types import SimpleNamespace

    import numpy as np

    from ml_exp.steps.inference import _scores_by_length
    from ml_exp.toolkit.scoring import TOKEN_BUDGET_ROWS, length_batches

    lengths = [100, 90, 50, 50, 40, 20, 20, 10, 10, 10, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    assert length_batches(lengths, 4) == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 24), (24, 25)]
    spans = length_batches(lengths, 4, by_tokens=True)
    assert spans[0] == (0, 4) and spans[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # every row once, in order
    for start, end in spans:  # no batch pads to more tokens than the first, nor more rows than the cap
        assert (end - start) * lengths[start] <= 4 * lengths[0] and end - start <= TOKEN_BUDGET_ROWS * 4
    assert len(spans) < 7 and length_batches([], 4, by_tokens=True) == []

    rng = np.random.default_rng(0)
    block = {"input_ids": [[1] * int(n) for n in rng.permutation(lengths)]}
    sizes: list[int] = []

    def scores(batch):
        sizes.append(len(batch["input_ids"]))
        return np.asarray([[len(ids), 0.0] for ids in batch["input_ids"]], dtype=np.float32)

    for device, expected in (("cpu", [4, 4, 4, 4, 4, 4, 1]), ("cuda", [e - s for s, e in spans])):
        sizes.clear()
        probs = _scores_by_length(SimpleNamespace(device=SimpleNamespace(type=device), scores=scores), block, ["input_ids"], 4)
        assert sizes == expected
        assert probs[:, 0].tolist() == [len(ids) for ids in block["input_ids"]]  # back in the block's order
