"""ml_exp.toolkit: the one-line encode and metrics a user's functions can call (offline)."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from ml_exp import toolkit
from ml_exp.config import load_config
from ml_exp.experiment.context import Context

METRIC_KEYS = {f"{m}_{a}" for m in ("precision", "recall", "f1") for a in ("macro", "micro", "weighted")} | {"accuracy"}
SHIPPED_METRIC = Path(toolkit.__file__).with_name("metrics") / "classification.py"


@pytest.fixture(scope="module", autouse=True)
def offline_hf(tmp_path_factory):
    """Where evaluate copies local metric scripts (read when evaluate is first imported), and no Hub."""
    os.environ.setdefault("HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")


def sklearn_metrics(preds, refs, num_labels):
    labels = list(range(num_labels))
    out = {"accuracy": accuracy_score(refs, preds)}
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(refs, preds, labels=labels, average=average, zero_division=0)
        out.update({f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f})
    return out


# --- classification_metrics -------------------------------------------------------------------


@pytest.mark.parametrize("as_numpy", [True, False], ids=["numpy", "lists"])
def test_metrics_equal_sklearn_on_random_data(as_numpy):
    rng = np.random.default_rng(7)
    labels = ["contract", "audit", "policy", "memo", "never-seen"]  # the last class occurs nowhere
    refs = rng.integers(0, 4, size=300)
    preds = np.where(rng.random(300) < 0.6, refs, rng.integers(0, 4, size=300))
    got = toolkit.classification_metrics(
        preds if as_numpy else preds.tolist(), refs if as_numpy else refs.tolist(), labels
    )
    assert set(got) == METRIC_KEYS
    assert all(type(v) is float for v in got.values())
    expected = sklearn_metrics(preds, refs, len(labels))
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    # the unseen class counts in macro averaging (a 0 for it), so macro < what 4 labels give
    assert got["f1_macro"] < sklearn_metrics(preds, refs, 4)["f1_macro"]


def test_perfect_predictions_score_one():
    refs = [0, 1, 2, 2, 1, 0, 2]
    got = toolkit.classification_metrics(list(refs), refs, ["a", "b", "c"])
    assert got == {key: 1.0 for key in METRIC_KEYS}


def test_logits_are_reduced_with_argmax():
    logits = np.array([[2.0, 0.1], [0.3, 0.9], [0.0, -1.0]])
    got = toolkit.classification_metrics(logits, [0, 1, 1], ["a", "b"])
    assert got["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "preds, refs, labels, match",
    [
        ([0, 1], [0], ["a", "b"], "2 predictions but 1 references"),
        ([], [], ["a"], "no predictions"),
        ([0, 3], [0, 1], ["a", "b"], r"outside 0\.\.1"),
        ([0, 1], [0, 1], [], "labels is empty"),
    ],
)
def test_metrics_reject_bad_input(preds, refs, labels, match):
    with pytest.raises(ValueError, match=match):
        toolkit.classification_metrics(preds, refs, labels)


def test_evaluate_loads_the_shipped_module_once(monkeypatch):
    import evaluate

    module = toolkit.classification_metric_module()
    assert isinstance(module, evaluate.Metric)
    assert type(module).__name__ == "ClassificationMetrics"
    # evaluate imported a copy of the file shipped in the runtime, from HF_MODULES_CACHE
    copied = Path(inspect.getfile(type(module)))
    assert copied.read_text() == SHIPPED_METRIC.read_text()
    assert copied != SHIPPED_METRIC.resolve()
    assert str(copied).startswith(os.path.realpath(evaluate.config.HF_MODULES_CACHE)) or str(copied).startswith(
        str(evaluate.config.HF_MODULES_CACHE)
    )
    # cached: no second evaluate.load
    monkeypatch.setattr(evaluate, "load", lambda *a, **k: pytest.fail("evaluate.load called again"))
    assert toolkit.classification_metric_module() is module
    got = toolkit.classification_metrics([0, 1, 1], [0, 1, 0], ["a", "b"])
    assert got == module.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_labels=2)


def test_metrics_go_through_the_evaluate_module(monkeypatch):
    module = toolkit.classification_metric_module()
    seen = []
    original = type(module)._compute

    def spy(self, predictions, references, num_labels=None):
        seen.append((list(predictions), list(references), num_labels))
        return original(self, predictions, references, num_labels)

    monkeypatch.setattr(type(module), "_compute", spy)
    toolkit.classification_metrics(np.array([1, 0]), np.array([1, 1]), ["x", "y", "z"])
    assert seen == [([1, 0], [1, 1], 3)]


def test_metrics_folder_is_part_of_the_installed_package():
    import ml_exp.toolkit.metrics

    assert Path(ml_exp.toolkit.metrics.CLASSIFICATION) == SHIPPED_METRIC.resolve()
    assert Path(ml_exp.toolkit.metrics.CLASSIFICATION).is_file()


def test_import_is_light():
    """exp validate imports experiment.py, which imports ml_exp.toolkit: no ML stack at import."""
    code = (
        "import sys, ml_exp.toolkit; "
        "print(','.join(m for m in ('torch', 'transformers', 'evaluate', 'datasets', 'sklearn', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- tokenizer_encode -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    corpus = ["the contract is signed today.", "audit report of the finances.", "policy for remote work."] * 20
    backend.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=100, special_tokens=specials))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", backend.token_to_id("[CLS]")), ("[SEP]", backend.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "settings.ini").write_text(
        "[settings]\nEXPERIMENT_NAME = EXP-1-t\nMODEL_NAMES = tiny\nWANDB_MODE = disabled\nMAX_LENGTH = 7\n"
    )
    return Context(config=load_config(tmp_path, environ={}))


def test_encode_joins_fields_and_skips_missing_values(tokenizer, ctx):
    batch = {
        "title": ["Contract", None, ""],
        "text": ["signed today", "audit report", "remote work"],
        "label": [0, 1, 2],
    }
    got = toolkit.tokenizer_encode(batch, tokenizer, ctx, text_fields=("title", "text"), max_length=64)
    assert isinstance(got, dict) and all(isinstance(v, list) for v in got.values())
    expected = tokenizer(["Contract. signed today", "audit report", "remote work"])
    assert got["input_ids"] == expected["input_ids"]
    assert got["attention_mask"] == expected["attention_mask"]
    period = tokenizer.convert_tokens_to_ids(".")
    assert period != tokenizer.unk_token_id
    assert period in got["input_ids"][0] and period not in got["input_ids"][1]  # ". " only between present fields
    assert tokenizer.unk_token_id not in sum(got["input_ids"], [])
    # no padding: the collator pads each batch
    assert len({len(ids) for ids in got["input_ids"]}) > 1
    assert tokenizer.pad_token_id not in got["input_ids"][0]


def test_encode_truncates_to_max_length(tokenizer, ctx):
    batch = {"text": ["the contract is signed today " * 10, "policy"]}
    default = toolkit.tokenizer_encode(batch, tokenizer, ctx)  # MAX_LENGTH = 7 from settings.ini
    assert [len(ids) for ids in default["input_ids"]] == [7, 3]
    assert default["input_ids"][0][-1] == tokenizer.sep_token_id
    explicit = toolkit.tokenizer_encode(batch, tokenizer, ctx, max_length=5)
    assert [len(ids) for ids in explicit["input_ids"]] == [5, 3]
    tokenizer.model_max_length, saved = 4, tokenizer.model_max_length
    try:  # never beyond what the model accepts
        assert len(toolkit.tokenizer_encode(batch, tokenizer, ctx)["input_ids"][0]) == 4
    finally:
        tokenizer.model_max_length = saved


def test_encode_names_a_missing_field(tokenizer, ctx):
    with pytest.raises(ValueError, match=r"'title'.*their fields: label, text"):
        toolkit.tokenizer_encode({"text": ["a"], "label": [0]}, tokenizer, ctx, text_fields=("title", "text"))


def test_encode_works_with_datasets_map(tokenizer, ctx):
    import datasets

    raw = datasets.Dataset.from_dict(
        {"id": ["1", "2", "3"], "text": ["audit report", "the contract", "policy"], "label": [1, 0, 2]}
    )
    encoded = raw.map(lambda b: toolkit.tokenizer_encode(b, tokenizer, ctx), batched=True, batch_size=2)
    assert set(encoded.column_names) >= {"id", "label", "input_ids", "attention_mask"}
    assert encoded[1]["input_ids"] == tokenizer("the contract")["input_ids"]


def test_the_former_name_still_works():
    """Experiments generated before the rename import ``ml_exp.defaults``: the same functions."""
    from ml_exp import defaults

    assert set(defaults.__all__) == set(toolkit.__all__)
    assert all(getattr(defaults, name) is getattr(toolkit, name) for name in toolkit.__all__)


# --- multi_label_metrics (issue 25) -------------------------------------------------------------


def test_multi_label_metrics_on_a_worked_example():
    labels = ["soc2", "bridge-letter", "dpa"]
    references = [[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]]  # the last document carries no label
    predictions = [[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0]]
    got = toolkit.multi_label_metrics(predictions, references, labels)
    assert got["subset_accuracy"] == pytest.approx(2 / 4)  # documents 2 and 4 have every label right
    assert got["hamming_loss"] == pytest.approx(2 / 12)  # two wrong cells of twelve
    # micro: 3 true positives, 1 false positive, 1 false negative
    assert got["precision_micro"] == pytest.approx(3 / 4)
    assert got["recall_micro"] == pytest.approx(3 / 4)
    assert got["f1_micro"] == pytest.approx(3 / 4)
    # per label: soc2 perfect, bridge-letter 0 (one miss, one false alarm), dpa perfect
    assert (got["precision_soc2"], got["recall_soc2"], got["f1_soc2"]) == (1.0, 1.0, 1.0)
    assert (got["precision_bridge-letter"], got["recall_bridge-letter"]) == (0.0, 0.0)
    assert got["f1_macro"] == pytest.approx(2 / 3)
    assert all(type(v) is float for v in got.values())


def test_multi_label_metrics_equal_sklearn_on_random_data():
    from sklearn.metrics import f1_score, hamming_loss

    rng = np.random.default_rng(11)
    labels = ["a", "b", "c", "d", "never-seen"]
    refs = (rng.random((200, 5)) < 0.3).astype(int)
    refs[:, 4] = 0
    preds = np.where(rng.random((200, 5)) < 0.8, refs, 1 - refs)
    preds[:, 4] = 0
    got = toolkit.multi_label_metrics(preds, refs.tolist(), labels)
    for average in ("micro", "macro", "samples"):
        assert got[f"f1_{average}"] == pytest.approx(f1_score(refs, preds, average=average, zero_division=0))
    assert got["hamming_loss"] == pytest.approx(hamming_loss(refs, preds))
    assert got["f1_never-seen"] == 0.0


@pytest.mark.parametrize(
    ("predictions", "references", "labels", "message"),
    [
        ([0, 1], [0, 1], ["a", "b"], "must be multi-hot rows"),
        ([[0.9, 0.1]], [[1, 0]], ["a", "b"], "threshold probabilities or logits first"),
        ([[1, 0, 0]], [[1, 0, 0]], ["a", "b"], "3 columns but there are 2 labels"),
        ([[1, 0]], [[1, 0], [0, 1]], ["a", "b"], "1 predictions but 2 references"),
        (np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"], "no predictions to score"),
        ([[1, 0]], [[1, 0]], ["a", "a"], "labels ['a'] occur more than once"),
        ([[1]], [[1]], [], "labels is empty"),
    ],
)
def test_multi_label_metrics_refuse_bad_input(predictions, references, labels, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        toolkit.multi_label_metrics(predictions, references, labels)


# --- tune_label_thresholds (issue 25 item 2) ----------------------------------------------------

# Label "a": positives score 0.9, 0.7, 0.4; negatives 0.6, 0.2, 0.1. Label "b": never present.
THRESHOLD_PROBS = [[0.9, 0.3], [0.7, 0.2], [0.6, 0.8], [0.4, 0.1], [0.2, 0.4], [0.1, 0.6]]
THRESHOLD_REFS = [[1, 0], [1, 0], [0, 0], [1, 0], [0, 0], [0, 0]]


def test_f1_threshold_maximises_each_labels_f1():
    tuned = toolkit.tune_label_thresholds(THRESHOLD_PROBS, THRESHOLD_REFS, ["a", "b"], "f1")
    # at 0.4 all three positives and one negative pass: F1 = 6/7, better than 0.7 (0.8) or 0.9 (0.5)
    assert tuned["a"] == {"threshold": 0.4, "precision": 0.75, "recall": 1.0, "met": True}
    # no positive to tune on: the default threshold, marked as not tuned
    assert tuned["b"]["threshold"] == 0.5 and tuned["b"]["met"] is False


def test_precision_target_keeps_the_lowest_threshold_that_reaches_it():
    tuned = toolkit.tune_label_thresholds(THRESHOLD_PROBS, THRESHOLD_REFS, ["a", "b"], "precision:0.95")
    assert tuned["a"] == {"threshold": 0.7, "precision": 1.0, "recall": pytest.approx(2 / 3), "met": True}
    probs = [[0.9], [0.8], [0.1]]
    refs = [[0], [1], [1]]  # the top score is a negative: precision 1.0 is out of reach
    unmet = toolkit.tune_label_thresholds(probs, refs, ["a"], "precision:0.99")["a"]
    assert unmet["met"] is False and unmet["precision"] < 0.99


def test_fixed_threshold_applies_to_every_label():
    tuned = toolkit.tune_label_thresholds(THRESHOLD_PROBS, THRESHOLD_REFS, ["a", "b"], "0.65")
    assert {name: t["threshold"] for name, t in tuned.items()} == {"a": 0.65, "b": 0.65}
    assert tuned["a"]["precision"] == 1.0 and tuned["a"]["recall"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("rule", ["f2", "precision", "precision:1.5", "precision:x", "0", "1", "nan"])
def test_bad_threshold_rule_is_refused_naming_the_setting(rule):
    with pytest.raises(ValueError, match=re.escape(f"LABEL_THRESHOLDS = {rule!r}: use f1")):
        toolkit.parse_threshold_rule(rule)


def test_thresholds_refuse_probabilities_that_do_not_match_the_references():
    with pytest.raises(ValueError, match="probabilities have shape"):
        toolkit.tune_label_thresholds([[0.5]], [[1, 0]], ["a", "b"])


# --- temperature scaling and ECE (issue 25 item 3) ----------------------------------------------


def overconfident_single_label(seed=3, n=4000, k=4, sharpen=3.0):
    """Labels drawn from softmax(z); the model reports softmax(3 z): confident past its accuracy."""
    from scipy.special import softmax

    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 1.5, size=(n, k))
    cumulative = softmax(true_logits, axis=1).cumsum(axis=1)
    labels = np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), k - 1)
    return true_logits * sharpen, labels


def test_temperature_recovers_overconfidence_and_lowers_ece():
    logits, labels = overconfident_single_label()
    temperature = toolkit.fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.15)

    def ece(probs):
        return toolkit.expected_calibration_error(probs.max(axis=1), probs.argmax(axis=1) == labels)

    before = ece(toolkit.apply_temperature(logits, 1.0))
    after = ece(toolkit.apply_temperature(logits, temperature))
    assert after < before / 3, (before, after)
    # scaling never changes the predicted class
    assert (toolkit.apply_temperature(logits, temperature).argmax(axis=1) == logits.argmax(axis=1)).all()


def test_multi_label_temperature_is_fitted_per_label():
    rng = np.random.default_rng(5)
    true_logits = rng.normal(0, 2.0, size=(4000, 2))
    truth = (rng.random((4000, 2)) < 1 / (1 + np.exp(-true_logits))).astype(int)
    reported = true_logits * np.array([3.0, 0.5])  # label 0 overconfident, label 1 underconfident
    temperatures = toolkit.fit_temperature(reported, truth, multi_label=True)
    assert temperatures == [pytest.approx(3.0, rel=0.15), pytest.approx(0.5, rel=0.15)]
    before = toolkit.expected_calibration_error(toolkit.apply_temperature(reported, 1.0, multi_label=True), truth)
    after = toolkit.expected_calibration_error(toolkit.apply_temperature(reported, temperatures, multi_label=True), truth)
    assert after < before / 3, (before, after)


def test_ece_on_a_worked_example():
    # bin [0.9, 1.0]: confidence 0.95, right half the time -> gap 0.45 over half the documents
    # bin [0.5, 0.6): confidence 0.55, right every time -> gap 0.45 over the other half
    assert toolkit.expected_calibration_error([0.95, 0.95, 0.55, 0.55], [1, 0, 1, 1]) == pytest.approx(0.45)
    assert toolkit.expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0
    with pytest.raises(ValueError, match="2 confidences but 1 outcomes"):
        toolkit.expected_calibration_error([0.5, 0.5], [1])
    with pytest.raises(ValueError, match="references must be 2 class ids"):
        toolkit.fit_temperature([[1.0, 0.0], [0.0, 1.0]], [0.5, 1.0])


# --- review routing (issue 25 item 4) -----------------------------------------------------------

REVIEW_CONF = [0.99, 0.95, 0.95, 0.9, 0.8, 0.7, 0.6]
REVIEW_RIGHT = [1, 1, 1, 0, 1, 1, 0]


def test_review_threshold_takes_the_most_coverage_that_meets_the_target():
    curve = toolkit.coverage_precision_curve(REVIEW_CONF, REVIEW_RIGHT)
    # the tie at 0.95 is one threshold: both documents go through together
    assert curve["threshold"] == [0.99, 0.95, 0.9, 0.8, 0.7, 0.6]
    assert curve["precision"] == pytest.approx([1.0, 1.0, 0.75, 0.8, 5 / 6, 5 / 7])
    chosen = toolkit.review_threshold(REVIEW_CONF, REVIEW_RIGHT, 0.8)
    # 0.7 automates six documents at 5/6; 0.9 (0.75) fails in between, which does not stop it
    assert chosen == {"threshold": 0.7, "coverage": pytest.approx(6 / 7), "precision": pytest.approx(5 / 6), "target": 0.8}
    strict = toolkit.review_threshold(REVIEW_CONF, REVIEW_RIGHT, 0.98)
    assert strict["threshold"] == 0.95 and strict["coverage"] == pytest.approx(3 / 7)
    assert toolkit.needs_review(REVIEW_CONF, strict["threshold"]) == [False, False, False, True, True, True, True]


def test_test_split_precision_at_the_validation_threshold():
    routed = toolkit.routed_precision([0.97, 0.96, 0.5, 0.99], [1, 0, 1, 1], 0.95)
    assert routed == {"threshold": 0.95, "coverage": 0.75, "precision": pytest.approx(2 / 3)}
    assert toolkit.routed_precision([0.5], [1], 0.95)["precision"] is None


def test_unreachable_target_sends_everything_to_review():
    chosen = toolkit.review_threshold([0.9, 0.8], [0, 1], 0.99)
    assert chosen["threshold"] is None and chosen["coverage"] == 0.0
    assert toolkit.needs_review([0.9, 0.8], None) == [True, True]
    assert toolkit.routed_precision([0.9], [1], None) == {"threshold": None, "coverage": 0.0, "precision": None}


@pytest.mark.parametrize("target", [0, 1.5, -0.2])
def test_bad_review_target_names_the_setting(target):
    with pytest.raises(ValueError, match=re.escape(f"REVIEW_TARGET_PRECISION = {target!r}")):
        toolkit.review_threshold([0.9], [1], target)
