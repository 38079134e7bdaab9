"""Document-level training's building blocks (issue 27): whole documents per batch, loss per document."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ml_exp.steps.document_batches import (  # noqa: E402
    DocumentBatchSampler,
    DocumentTraining,
    document_loss,
    document_spans,
)
from ml_exp.toolkit.documents import combine, document_starts  # noqa: E402

# three documents: 3 windows, 1 window, 2 windows
WINDOWS = [0, 1, 2, 0, 0, 1]


def test_spans_follow_the_window_column_and_refuse_rows_out_of_order():
    assert document_spans(WINDOWS) == [(0, 3), (3, 4), (4, 6)]
    with pytest.raises(ValueError, match="window 0"):
        document_spans([1, 0])


def test_batches_hold_whole_documents_in_order_and_differ_by_epoch_only():
    windows = [w for n in (3, 1, 2, 5, 1, 4, 2) for w in range(n)]
    sampler = DocumentBatchSampler(windows, documents_per_batch=2, seed=7)
    first = sampler.batches()
    assert len(first) == len(sampler) == 4
    assert sorted(row for batch in first for row in batch) == list(range(len(windows)))
    spans = set(document_spans(windows))
    for batch in first:
        starts = [i for i, row in enumerate(batch) if windows[row] == 0]
        assert starts[0] == 0 and 1 <= len(starts) <= 2  # starts at a document's first window
        for a, b in zip(starts, starts[1:] + [len(batch)]):  # each document whole, its windows in order
            assert (batch[a], batch[b - 1] + 1) in spans and batch[a:b] == list(range(batch[a], batch[b - 1] + 1))
    assert DocumentBatchSampler(windows, 2, seed=7).batches() == first  # resume and every rank: same batches
    orders = set()
    for epoch in range(5):
        sampler.set_epoch(epoch)
        orders.add(tuple(tuple(b) for b in sampler.batches()))
    assert len(orders) > 1


def test_window_epochs_shuffle_every_window_into_as_many_batches_then_whole_documents():
    windows = [w for n in (3, 1, 2, 5, 1, 4, 2) for w in range(n)]
    sampler = DocumentBatchSampler(windows, documents_per_batch=2, seed=7, window_epochs=2)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = sampler.batches()
        assert sampler.window_phase == (epoch < 2) and len(batches) == len(sampler) == 4
        assert sorted(row for batch in batches for row in batch) == list(range(len(windows)))
        if epoch < 2:  # 18 windows: batches of 4 or 5, documents mixed
            assert sorted(map(len, batches)) == [4, 4, 5, 5] and batches != sorted(batches)
        else:
            assert all(windows[batch[0]] == 0 for batch in batches)


def test_window_epochs_train_no_more_rows_a_batch_than_chunk_grad_windows_lets_a_document_batch():
    windows = [w for n in (3, 1, 2, 5, 1, 4, 2) for w in range(n)]
    sampler = DocumentBatchSampler(windows, documents_per_batch=2, seed=7, window_epochs=2, grad_windows=1)
    seen = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = sampler.batches()
        assert len(batches) == 4 and all(len(batch) == 2 for batch in batches)  # 2 documents x 1 window
        assert len({row for batch in batches for row in batch}) == 8
        seen.append({row for batch in batches for row in batch})
    assert seen[0] != seen[1]  # another share of the windows each window epoch


def test_loss_under_mean_is_the_documents_cross_entropy_of_inference_scores():
    torch.manual_seed(0)
    logits = torch.randn(len(WINDOWS), 4)
    labels = torch.tensor([2, 2, 2, 0, 3, 3])
    windows = torch.tensor(WINDOWS)
    scores, _ = combine(torch.softmax(logits, -1).numpy(), document_starts(WINDOWS), "mean")
    expected = -torch.log(torch.tensor(scores)[torch.arange(3), torch.tensor([2, 0, 3])]).mean()
    assert float(document_loss(logits, labels, windows, "mean")) == pytest.approx(float(expected), rel=1e-5)


def test_loss_under_max_is_the_cross_entropy_of_each_classs_highest_logit():
    torch.manual_seed(0)
    logits = torch.randn(len(WINDOWS), 4)
    highest = torch.stack([logits[0:3].amax(0), logits[3], logits[4:6].amax(0)])
    expected = torch.nn.functional.cross_entropy(highest, torch.tensor([2, 0, 3]))
    labels, windows = torch.tensor([2, 2, 2, 0, 3, 3]), torch.tensor(WINDOWS)
    assert float(document_loss(logits, labels, windows, "max")) == pytest.approx(float(expected), rel=1e-5)


def test_under_max_filler_that_scores_low_for_every_class_is_left_alone():
    # a passage window sure of class 0 amid filler scoring low for every class: the document is
    # learnt, and the filler is not pushed towards the document's label (with each class's
    # highest probability scaled to sum to 1, uniform filler held the loss near 0.6 and was)
    logits = torch.tensor([[-6.0, -6.0, -6.0], [5.0, -5.0, -5.0], [-6.0, -6.0, -6.0]], requires_grad=True)
    loss = document_loss(logits, torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2]), "max")
    loss.backward()
    assert loss.item() < 1e-3
    assert float(logits.grad[0].abs().sum()) == float(logits.grad[2].abs().sum()) == 0.0
    assert float(logits.grad[1].abs().sum()) > 0


def test_one_window_documents_under_mean_are_plain_cross_entropy_with_class_weights():
    torch.manual_seed(1)
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    weights = [0.5, 2.0, 1.0]
    plain = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor(weights))
    ours = document_loss(logits, labels, torch.zeros(5, dtype=torch.long), "mean", weights)
    assert float(ours) == pytest.approx(float(plain), rel=1e-5)


def test_under_max_the_gradient_reaches_the_deciding_window_and_not_the_filler():
    # one document of three windows: window 1 gives its class (1) the highest logit, window 0 class 0
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.5]], requires_grad=True)
    document_loss(logits, torch.tensor([1, 1, 1]), torch.tensor([0, 1, 2]), "max").backward()
    assert float(logits.grad[1].abs().sum()) > 0
    assert float(logits.grad[2].abs().sum()) == 0.0  # filler window 2 gives no class its max


def test_a_batch_that_starts_mid_document_is_refused():
    with pytest.raises(ValueError, match="first window"):
        document_loss(torch.zeros(2, 2), torch.tensor([0, 0]), torch.tensor([1, 2]))


@pytest.mark.parametrize("window_epochs", [0, 1, 5])  # 5: all but the last of the 2 epochs
def test_the_trainer_trains_on_whole_documents_with_gradient_accumulation(tmp_path, window_epochs):
    """A real tiny BERT: documents of 1-4 windows, one window saying the class, the rest shared
    filler; StepTrainer with document_training sees batches of whole documents only, after
    ``window_epochs`` epochs of windows of several documents, trained each on its own."""
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, DataCollatorWithPadding, TrainingArguments

    from ml_exp.steps.trainer import StepTrainer
    from tests.tiny_tokenizer import wordpiece_tokenizer

    words = {0: "contract signed party terms", 1: "audit report finances review"}
    filler = "the weather was mild and the office was quiet"
    tokenizer = wordpiece_tokenizer([*words.values(), filler] * 5, vocab_size=60)
    rng = np.random.default_rng(0)
    rows = {"input_ids": [], "attention_mask": [], "label": [], "window": []}
    for d in range(24):
        label, count = d % 2, int(rng.integers(1, 5))
        deciding = int(rng.integers(0, count))
        for w in range(count):
            encoded = tokenizer(words[label] if w == deciding else filler)
            rows["input_ids"].append(encoded["input_ids"])
            rows["attention_mask"].append(encoded["attention_mask"])
            rows["label"].append(label)
            rows["window"].append(w)
    train = Dataset.from_dict(rows)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = BertForSequenceClassification(BertConfig(**config.to_dict(), num_labels=2))
    seen: list[list[int]] = []
    window_losses: list[tuple[float, float]] = []  # (the trainer's loss, each window's own cross-entropy)

    class Spy(StepTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            if "window" not in inputs:
                return super().compute_loss(model, inputs, *args, **kwargs)
            seen.append(inputs["window"].tolist())
            plain = {k: v for k, v in inputs.items() if k not in ("window", "labels")}
            with torch.no_grad():
                own = torch.nn.functional.cross_entropy(model(**plain).logits, inputs["labels"])
            loss = super().compute_loss(model, inputs, *args, **kwargs)
            if self._document_batches.window_phase:
                window_losses.append((float(loss.detach()), float(own)))
            return loss

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        num_train_epochs=2,
        learning_rate=1e-3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=3,
    )
    trainer = Spy(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        document_training=DocumentTraining(rows["window"], "max", window_epochs=window_epochs),
    )
    before = [p.detach().clone() for p in model.parameters()]
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert len(seen) == 2 * 8  # 24 documents in batches of 3, two epochs (window epochs: as many batches)
    assert sum(len(w) for w in seen[:8]) == sum(len(w) for w in seen[8:]) == len(rows["window"])  # each once
    window_epochs = min(window_epochs, 1)
    for windows in seen[8 * window_epochs :]:  # whole documents: 3 first windows, each its own windows in order
        assert windows[0] == 0 and windows.count(0) == 3
        assert all(b == a + 1 or b == 0 for a, b in zip(windows, windows[1:]))
    assert len(window_losses) == 8 * window_epochs
    if window_epochs:  # windows of several documents, shuffled, each trained on its own
        assert any(windows[0] != 0 or windows.count(0) != 3 for windows in seen[:8])
        assert all(loss == pytest.approx(own, rel=1e-4) for loss, own in window_losses)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def test_the_sampler_learns_its_epoch_from_the_trainer_state_as_a_resumed_run_has_it(tmp_path):
    # several processes: accelerate wraps the batch sampler twice on a resumed epoch, and the
    # Trainer's set_epoch does not reach it; the callback sets it from the state at each epoch's start
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, TrainerControl, TrainerState, TrainingArguments

    from ml_exp.steps.trainer import DocumentEpochs, StepTrainer

    windows = [0, 1, 0, 0, 1, 2]
    train = Dataset.from_dict({"input_ids": [[1, 2]] * 6, "attention_mask": [[1, 1]] * 6, "label": [0, 0, 1, 0, 0, 0],
                               "window": windows})  # fmt: skip
    model = BertForSequenceClassification(
        BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    )
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=3, report_to="none", use_cpu=True)
    trainer = StepTrainer(model=model, args=args, train_dataset=train,
                          document_training=DocumentTraining(windows, "max", window_epochs=1))  # fmt: skip
    trainer.get_train_dataloader()
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, DocumentEpochs))
    for epoch, (expected, window_phase) in {0.0: (0, True), 1.0: (1, False), 2.625: (2, False)}.items():
        callback.on_epoch_begin(args, TrainerState(epoch=epoch), TrainerControl())
        assert (trainer._document_batches.epoch, trainer._document_batches.window_phase) == (expected, window_phase)


def chunked(tokenizer, documents: int, seed: int) -> dict[str, list]:
    """Documents of 1-4 windows: one window says the class, the others are filler."""
    from tests.test_training_order import WORDS

    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"id": [], "input_ids": [], "attention_mask": [], "label": [], "window": []}
    for d in range(documents):
        label, count = d % 2, int(rng.integers(1, 5))
        deciding = int(rng.integers(0, count))
        for w in range(count):
            encoded = tokenizer(WORDS[label] if w == deciding else "the office was quiet and the weather mild")
            rows["id"].append(f"d{seed}-{d}")
            rows["input_ids"].append(encoded["input_ids"])
            rows["attention_mask"].append(encoded["attention_mask"])
            rows["label"].append(label)
            rows["window"].append(w)
    return rows


def test_chunk_training_document_trains_through_the_training_step(tmp_path, monkeypatch):
    import datasets

    from ml_exp.steps import trainer as trainer_module
    from ml_exp.storage.layout import PROCESSOR
    from tests.test_training_order import BATCH, WORDS, train
    from tests.tiny_tokenizer import wordpiece_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    tokenizer = wordpiece_tokenizer([*WORDS.values(), "the office was quiet and the weather mild"] * 5, vocab_size=80)
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(chunked(tokenizer, 24, 0)),
            "validation": datasets.Dataset.from_dict(chunked(tokenizer, 8, 1)),
        }
    )
    splits.save_to_disk(str(tmp_path / "data"))
    tokenizer.save_pretrained(str(tmp_path / "data" / PROCESSOR))
    documents_seen: list[int] = []
    original = trainer_module.StepTrainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):
        if "window" in inputs:
            documents_seen.append(int((inputs["window"] == 0).sum()))
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer_module.StepTrainer, "compute_loss", spy)
    common = {
        "DOCUMENT_STRATEGY": "chunks",
        "MAX_LENGTH": "64",
        "CHUNK_STRIDE": "8",
        "CHUNK_AGGREGATION": "max",
        "CLASS_WEIGHTS": "balanced",
    }
    (tmp_path / "doc").mkdir()
    _, summary, references, _ = train(tmp_path / "doc", tmp_path / "data", CHUNK_TRAINING="document", **common)
    assert summary["global_step"] == 2 * (24 // BATCH)  # steps count documents, not windows
    # CHUNK_WINDOW_EPOCHS = 1 (the default): windows of many documents first, as many batches
    assert len(documents_seen) == 2 * 24 // BATCH and documents_seen[: 24 // BATCH] != [BATCH] * (24 // BATCH)
    assert documents_seen[24 // BATCH :] == [BATCH] * (24 // BATCH)
    assert references and all(len(refs) == 8 for refs in references)  # evaluated per document, as before
    assert np.isfinite(summary["best_metric"])

    documents_seen.clear()
    (tmp_path / "capped").mkdir()
    _, capped, _, _ = train(tmp_path / "capped", tmp_path / "data", CHUNK_TRAINING="document", CHUNK_GRAD_WINDOWS="1",
                            CHUNK_WINDOW_EPOCHS="0", **common)  # fmt: skip
    assert capped["global_step"] == summary["global_step"] and np.isfinite(capped["best_metric"])
    assert documents_seen == [BATCH] * (2 * 24 // BATCH)  # whole documents from the first step

    documents_seen.clear()
    (tmp_path / "win").mkdir()
    _, windows, _, _ = train(tmp_path / "win", tmp_path / "data", **common)  # the default: window training
    assert documents_seen == [] and windows["global_step"] > summary["global_step"]


def test_a_resumed_document_training_sees_the_batches_the_whole_run_saw(tmp_path):
    """Resumption: the batches are a pure function of (seed, epoch), so a run resumed from the
    epoch-1 checkpoint trains on exactly the second epoch's batches of the run it resumes."""
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, DataCollatorWithPadding, TrainingArguments

    from ml_exp.steps.trainer import StepTrainer
    from tests.tiny_tokenizer import wordpiece_tokenizer

    tokenizer = wordpiece_tokenizer(["contract signed party", "audit report review", "the office was quiet"] * 5, 60)
    rows = chunked(tokenizer, 12, 5)
    del rows["id"]
    train = Dataset.from_dict(rows)

    def run(output: str, resume: str | None = None) -> list[list[int]]:
        seen: list[list[int]] = []

        class Spy(StepTrainer):
            def compute_loss(self, model, inputs, *args, **kwargs):
                if "window" in inputs:
                    seen.append(inputs["input_ids"][:, 1].tolist() + inputs["window"].tolist())
                return super().compute_loss(model, inputs, *args, **kwargs)

        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
        args = TrainingArguments(
            output_dir=str(tmp_path / output),
            per_device_train_batch_size=2,
            num_train_epochs=2,
            save_strategy="epoch",
            report_to="none",
            use_cpu=True,
            seed=4,
        )
        trainer = Spy(
            model=BertForSequenceClassification(config),
            args=args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer),
            document_training=DocumentTraining(rows["window"], "mean"),
        )
        trainer.train(resume_from_checkpoint=resume)
        return seen

    whole = run("whole")
    assert len(whole) == 12 and whole[:6] != whole[6:]  # 6 batches of 2 documents per epoch, each epoch reshuffled
    resumed = run("resumed", resume=str(tmp_path / "whole" / "checkpoint-6"))
    assert resumed == whole[6:]


def test_top_windows_keep_each_documents_most_confident_ones():
    from ml_exp.steps.document_batches import top_windows

    logits = torch.tensor([[0.0, 0.1], [3.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.0], [0.0, 5.0]])
    windows = torch.tensor([0, 1, 2, 0, 0, 1])
    assert top_windows(logits, windows, 1).tolist() == [False, True, False, True, False, True]
    assert top_windows(logits, windows, 2).tolist() == [False, True, True, True, True, True]


def test_with_a_cap_only_the_top_windows_are_scored_with_gradients(tmp_path):
    """CHUNK_GRAD_WINDOWS' mechanism: every window scored under no_grad, then one window per
    document with gradients; the model still learns (its weights change) and the loss is finite."""
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, DataCollatorWithPadding, TrainingArguments

    from ml_exp.steps.trainer import StepTrainer
    from tests.tiny_tokenizer import wordpiece_tokenizer

    tokenizer = wordpiece_tokenizer(["contract signed party", "audit report review", "the office was quiet"] * 5, 60)
    rows = chunked(tokenizer, 12, 6)
    del rows["id"]
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    forwards: list[tuple[bool, int]] = []
    model.register_forward_hook(
        lambda module, args, kwargs, out: forwards.append((torch.is_grad_enabled(), len(out.logits))), with_kwargs=True
    )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        num_train_epochs=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
    )
    trainer = StepTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(rows),
        data_collator=DataCollatorWithPadding(tokenizer),
        document_training=DocumentTraining(rows["window"], "max", grad_windows=1),
    )
    before = [p.detach().clone() for p in model.parameters()]
    assert np.isfinite(trainer.train().training_loss)
    with_gradients = [rows for grad, rows in forwards if grad]
    assert len(forwards) > len(with_gradients) > 0  # the capped batches were scored twice
    assert all(n <= 2 for n in with_gradients)  # one window per document, two documents per batch
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def _prepare(project, **settings: str):
    """`exp run --steps reconciliation,preparation` on a baked demo; the preparation facts of its
    model and what the run printed."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    quiet = {"WANDB_MODE": "disabled", "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("exp")), "run", "--steps", "reconciliation,preparation"],
        cwd=project, capture_output=True, text=True, env={**os.environ, **quiet, **settings}, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = sorted((project / ".exp-store" / project.name).glob("run_*"), key=lambda p: int(p.name.split("_")[1]))
    manifest = json.loads((runs[-1] / "manifest.json").read_text())
    return manifest["steps"]["preparation"]["models"]["tiny-bert"]["documents"], done.stdout


def test_the_coverage_advice_names_the_strategy_that_fits_the_prepared_lengths_once(tmp_path):
    """The demo's documents (~2,000 tokens) prepared for real: under truncate the advice is chunks
    with CHUNK_TRAINING = document, under chunks with window training it is document training, and
    document training of documents of a few windows needs no advice. Said once per model."""
    from tests.bake import bake

    project = bake(tmp_path, ticket="EXP-270", model_slug="advice")

    def summary_says(said: str, advice: str) -> int:  # the summary wraps its lines to the terminal
        return " ".join(said.split()).count(" ".join(f"tiny-bert: {advice}".split()))

    documents, said = _prepare(project, DOCUMENT_STRATEGY="truncate")
    assert documents["splits"]["train"]["longer_than_max_length"] == 1.0  # every demo document is cut
    advice = documents["advice"]
    assert "DOCUMENT_STRATEGY = chunks with CHUNK_TRAINING = document" in advice and "100%" in advice
    assert summary_says(said, advice) == 1

    documents, said = _prepare(project)  # the demo as shipped: chunks, CHUNK_TRAINING = windows
    assert "CHUNK_TRAINING = document" in documents["advice"] and "CHUNK_TRAINING = windows" in documents["advice"]
    assert summary_says(said, documents["advice"]) == 1

    documents, said = _prepare(project, CHUNK_TRAINING="document")
    assert documents["advice"] is None and "CHUNK_TRAINING" not in said


def test_the_coverage_advice_says_truncate_is_enough_when_every_document_fits():
    from types import SimpleNamespace

    from ml_exp.steps.coverage import MANY_WINDOWS, strategy_advice

    def coverage(strategy, longer, windows=1, **config):
        settings = SimpleNamespace(
            **{"chunk_training": "windows", "chunk_grad_windows": 0, "chunk_aggregation": "max", **config}
        )
        train = {"documents": 10, "longer_than_max_length": longer, "windows_per_document": {"max": windows}}
        return strategy_advice({"strategy": strategy, "max_length": 128, "splits": {"train": train}}, settings)

    assert "DOCUMENT_STRATEGY = truncate is enough" in coverage("chunks", 0.0)
    assert "truncate is enough" in coverage("head_tail", 0.0)
    assert coverage("truncate", 0.0) is None  # already the cheapest that reads everything
    assert "if what decides a document can sit past" in coverage("truncate", 0.2)
    assert "CHUNK_GRAD_WINDOWS" in coverage("chunks", 0.9, MANY_WINDOWS + 1, chunk_training="document")
    assert coverage("chunks", 0.9, MANY_WINDOWS + 1, chunk_training="document", chunk_grad_windows=4) is None
    assert "CHUNK_AGGREGATION = mean" in coverage("chunks", 0.9, 4, chunk_training="document", chunk_aggregation="mean")
    assert strategy_advice({"strategy": "truncate", "max_length": 128, "splits": {}}, None) is None  # lengths unknown
