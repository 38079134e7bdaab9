"""One predictor for ``exp predict``, ``exp serve`` and a SageMaker endpoint: raw records in,
predictions out, exactly as the inference step predicts the test split.

Same preprocessing as training: the processor saved by preparation, the experiment's own
``encode`` (from its experiment.py), the run's settings (from its manifest, not today's
settings.ini), the shape checks of preparation (:func:`~ml_exp.toolkit.documents.check_encoded`);
same forward pass as the inference step (:class:`~ml_exp.toolkit.scoring.Scorer`), in batches of
``PER_DEVICE_EVAL_BATCH_SIZE``.

A record is a dict with the content fields the run's records had (those ``reconcile`` yielded),
an optional ``id`` and an optional ``label``; a binary field (an image's bytes) comes as base64
text in JSON; a prediction is ``{"id", "prediction", "scores":
{label: probability}}`` (+ ``"label"`` when the record had one). Bad records raise
:class:`RequestError` naming the record and the problem; the server turns it into a 4xx.

Long documents plug in at :class:`Documents`: :class:`Windows` turns a record that ``encode``
made into several windows (DOCUMENT_STRATEGY = chunks) back into one prediction, with its
``evidence``: ``{"window", "windows", "start", "end"}``, the window that decided it and its
character span in the encoded text (or ``"page"``, its page, when encode gives one window per
page), as in the inference step's predictions.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ml_exp.core.errors import StepError, UserError
from ml_exp.experiment.context import Context
from ml_exp.serving.bundle import Bundle
from ml_exp.serving.windows import Documents, WholeRecord, Windows

__all__ = ["Documents", "Predictor", "RequestError", "WholeRecord", "Windows", "Work"]

# Fields of a record that are not content (an input record may carry them).
ID, LABEL = "id", "label"


class RequestError(UserError):
    """A request or record the predictor refuses; ``status`` is the HTTP status it deserves."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Work:
    """Records on their way through the model: encoded and split into windows by :meth:`Predictor.begin`,
    scored some windows at a time by :meth:`Predictor.advance` (the server lets other requests go
    between the turns of a long document), made predictions by :meth:`Predictor.end`."""

    def __init__(
        self, records: Sequence[Mapping[str, Any]], windows: Mapping[str, list], owners: list[int], split: Any
    ):
        self.records, self.windows, self.owners, self.split = records, windows, owners, split
        self.parts: list[Any] = []  # score arrays of the windows scored so far, in order
        self.scored = 0

    @property
    def total(self) -> int:
        """How many windows the records make."""
        return len(self.owners)

    def done(self) -> bool:
        return self.scored >= self.total


class Predictor:
    """Load once, then :meth:`predict` lists of records (thread-safe: one forward at a time)."""

    def __init__(self, bundle: Bundle, experiment_dir: Path, log: logging.Logger | None = None):
        from transformers.utils import logging as hf_logging

        from ml_exp.config import load_config
        from ml_exp.core.errors import ProblemsFound
        from ml_exp.experiment.functions import load_functions
        from ml_exp.toolkit.decisions import Decisions, is_multi_label_model
        from ml_exp.toolkit.scoring import Scorer, load_classifier, saved_processor

        hf_logging.disable_progress_bar()  # no "Loading weights" bar in `exp predict`'s output or a server's log
        self.bundle, self.labels, self.fields = bundle, bundle.labels, bundle.fields
        self.info = {key: bundle.info.get(key) for key in ("experiment", "run", "model")}
        try:  # the run's settings win over the experiment folder's settings.ini
            config = load_config(experiment_dir, environ=bundle.settings)
        except ProblemsFound as exc:
            raise StepError(f"the settings of run_{self.info['run']} do not load here: {exc}") from None
        self.ctx = Context(config=config, run=None, log=log or logging.getLogger("ml_exp.experiment"))
        self.udfs = load_functions(experiment_dir, config.udf_module, keep_loaded=True)
        self.processor = saved_processor(bundle.processor.parent) if bundle.processor is not None else None
        if self.processor is None:  # as training: load_processor when preparation could not save it
            self.processor = self.udfs.load_processor(self.info["model"], self.ctx)
        model, tokenizer = load_classifier(bundle.model, self.labels, self.info["model"])
        self.model_name = self.info["model"]
        self.batch_size = config.per_device_eval_batch_size
        try:  # calibration, thresholds and review, as the inference step decides
            self.decisions = Decisions.read(bundle.model, self.labels, is_multi_label_model(model))
        except ValueError as exc:
            raise StepError(f"the model of run_{self.info['run']}: {exc}") from None
        self.documents: Documents = Windows(config.chunk_aggregation, self.decisions.multi_label)
        self._model, self._tokenizer, self._scorer_class = model, tokenizer, Scorer
        self.scorer: Any = None  # built on the first batch: the inputs are the encoded columns the model takes
        self._lock = threading.Lock()

    # --- records -----------------------------------------------------------------------------

    def check(self, records: Sequence[Any], where: str = "record", start: int = 0) -> None:
        """Refuse records the model cannot take, naming the first bad one (``<where> <start + i>``)."""
        if not records:
            raise RequestError("no records: send one record (a JSON object) or several (a list, or JSON Lines)")
        expected = ", ".join(self.fields)
        for index, record in enumerate(records):
            name = f"{where} {start + index}"
            if not isinstance(record, Mapping):
                raise RequestError(f"{name} is a JSON {json_type(record)}, not an object with the fields {expected}")
            missing = [field for field in self.fields if field not in record]
            if missing:
                raise RequestError(
                    f"{name} has no field {missing[0]!r} (the records of run_{self.info['run']} have "
                    f"the fields {expected}; id and label are optional)"
                )
            for field, kind in self.fields.items():
                value = record[field]
                if value is not None and _is_text(kind) and not isinstance(value, str):
                    raise RequestError(f"{name}: field {field!r} must be a string, not a JSON {json_type(value)}")
                if isinstance(value, str) and not _encodable(value):
                    raise RequestError(
                        f"{name}: field {field!r} holds a lone surrogate (an escape like \\ud800 without its "
                        "pair), which is not text; fix the record's encoding"
                    )
                if value is not None:
                    _decoded(value, kind, f"{name}: field {field!r}")
            texts = [record[f] for f, kind in self.fields.items() if _is_text(kind)]
            # a page without a text layer has empty text but words, boxes or an image: only a record
            # whose every content field is empty has nothing to classify
            others = [record[f] for f, kind in self.fields.items() if not _is_text(kind)]
            if (
                texts
                and not any(isinstance(t, str) and _has_content(t) for t in texts)
                and not any(map(_filled, others))
            ):
                raise RequestError(
                    f"{name} has empty text: {', '.join(repr(f) for f, k in self.fields.items() if _is_text(k))} "
                    "are all empty (or only spaces and invisible characters); nothing to classify"
                )
            if ID in record and not isinstance(record[ID], (str, int)) and record[ID] is not None:
                raise RequestError(
                    f"{name}: field 'id' must be a string or a number, not a JSON {json_type(record[ID])}"
                )
            if LABEL in record and record[LABEL] is not None:
                self._check_label(record[LABEL], name)

    def _check_label(self, label: Any, name: str) -> None:
        """A record's optional label (echoed back): one label, or in multi-label a list of known,
        distinct labels."""
        if not self.decisions.multi_label:
            if not isinstance(label, (str, int, float)):
                raise RequestError(f"{name}: field 'label' must be a label (a string), not a JSON {json_type(label)}")
            return
        if not isinstance(label, list) or not all(isinstance(item, str) for item in label):
            raise RequestError(
                f"{name}: field 'label' must be a list of labels (multi-label model), e.g. [{self.labels[0]!r}], "
                f"not a JSON {json_type(label)}"
            )
        unknown = [item for item in label if item not in self.labels]
        if unknown:
            raise RequestError(f"{name}: label {unknown[0]!r} is not one of the model's labels {self.labels}")
        if len(set(label)) != len(label):
            raise RequestError(f"{name}: field 'label' lists a label more than once ({label}); list each once")

    def predict(self, records: Sequence[Mapping[str, Any]], checked: bool = False) -> list[dict[str, Any]]:
        """Predictions for ``records`` (checked first unless ``checked``), in their order."""
        work = self.begin(records, checked)
        while not work.done():
            self.advance(work, work.total)
        return self.end(work)

    def begin(self, records: Sequence[Mapping[str, Any]], checked: bool = False) -> Work:
        """``records`` (checked first unless ``checked``) encoded and split into windows, none scored yet."""
        if not checked:
            self.check(records)
        batch: dict[str, list] = {
            field: [_decoded(r[field], kind) if r[field] is not None else None for r in records]
            for field, kind in self.fields.items()
        }
        batch[ID] = [record.get(ID) for record in records]
        with self._lock:
            encoded = self._encode(batch)
            windows, owners, split = self.documents.split(encoded, len(records))
        return Work(records, windows, owners, split)

    def advance(self, work: Work, windows: int) -> None:
        """Score the next ``windows`` windows of ``work`` (at least one batch)."""
        start = work.scored
        stop = min(work.total, start + max(windows, 1))
        with self._lock:
            part = self._scores({c: work.windows[c][start:stop] for c in work.windows}, stop - start)
        work.parts.append(part)
        work.scored = stop

    def end(self, work: Work) -> list[dict[str, Any]]:
        """The predictions of ``work``'s records, every window scored."""
        import numpy as np

        n = len(work.records)
        scores = np.concatenate(work.parts) if work.parts else np.zeros((0, len(self.labels)))
        scores, evidence = self.documents.combine(scores, work.owners, n, work.split)
        scores = self.decisions.calibrated(scores)
        predicted = self.decisions.predicted(scores)
        review = self.decisions.needs_review(scores)
        confidence = self.decisions.confidence(scores) if review is not None else None
        out = []
        for i, (record, row, proof) in enumerate(zip(work.records, scores.tolist(), evidence)):
            prediction = self._prediction(record, row, predicted[i], proof)
            if review is not None:
                prediction.update(confidence=round(float(confidence[i]), 7), needs_review=bool(review[i]))
            out.append(prediction)
        return out

    def _encode(self, batch: dict[str, list]) -> Mapping[str, list]:
        from ml_exp.toolkit.documents import check_encoded

        try:
            encoded = self.udfs.encode(batch, self.processor, self.ctx)
        except Exception as exc:  # the user's encode refused these records: say what it said
            raise RequestError(f"encode could not encode the records: {type(exc).__name__}: {exc}") from exc
        try:
            check_encoded(self.model_name, batch, encoded)
        except StepError as exc:
            raise StepError(f"{exc} (while serving)") from None
        return encoded

    def _scores(self, encoded: Mapping[str, list], n: int) -> Any:
        import numpy as np

        if self.scorer is None:
            from ml_exp.toolkit.scoring import accepted_inputs, model_inputs

            inputs = model_inputs(self._model, list(encoded))
            if not inputs:
                raise StepError(
                    f"encode returned {sorted(encoded)}, none of which model {self.model_name!r} takes "
                    f"(it accepts {accepted_inputs(self._model)})"
                )
            from ml_exp.toolkit.collate import batch_maker

            collate = batch_maker(self.udfs, self.processor, self.ctx) if self.udfs.collate is not None else None
            self.scorer = self._scorer_class(
                self._model,
                self._tokenizer,
                inputs,
                len(self.labels),
                self.model_name,
                self.ctx.config.mixed_precision,
                collate=collate,
            )
        parts = []
        for start in range(0, n, self.batch_size):  # the inference step's batches
            parts.append(
                self.scorer.scores({c: list(encoded[c][start : start + self.batch_size]) for c in self.scorer.inputs})
            )
        return np.concatenate(parts)

    def _prediction(self, record: Mapping[str, Any], scores: list[float], predicted: Any, evidence: Any) -> dict:
        out: dict[str, Any] = {
            "id": record.get(ID),
            "prediction": self.decisions.label_names(predicted),  # a list of labels in multi-label
            "scores": {label: round(float(s), 7) for label, s in zip(self.labels, scores)},
        }
        if LABEL in record:
            out["label"] = record[LABEL]
        if evidence is not None and self.decisions.multi_label:  # each predicted label's own window
            out["evidence"] = {label: proof for label, proof, chosen in zip(self.labels, evidence, predicted) if chosen}
        elif evidence is not None:
            out["evidence"] = evidence
        return out


def _is_text(arrow_type: str) -> bool:
    return arrow_type in ("string", "large_string", "string_view")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _has_content(text: str) -> bool:
    """Anything a tokenizer makes a token of: not only spaces, control and format characters
    (NUL, a BOM, a zero-width space), which tokenizers drop as they drop whitespace."""
    return any(not ch.isspace() and unicodedata.category(ch)[0] not in "CZ" for ch in text)


def _is_binary(arrow_type: str) -> bool:
    return arrow_type in ("binary", "large_binary", "binary_view")


def _decoded(value: Any, kind: str, where: str = "a binary field") -> Any:
    """A field's value as ``encode`` saw it in training: bytes (and lists of bytes: the pages of a
    document) from their base64 text; anything else as it is."""
    if _is_binary(kind):
        return _binary(value, where)
    if kind.startswith(("list<", "large_list<")) and _is_binary(kind.split(": ", 1)[-1].rstrip(">")):
        if not isinstance(value, list):
            raise RequestError(f"{where} holds a list of bytes: send a JSON array of base64 texts")
        return [None if v is None else _binary(v, where) for v in value]
    return value


def _binary(value: Any, where: str = "a binary field") -> bytes:
    """A binary field's bytes: JSON carries them as base64 text (bytes pass as they are)."""
    import base64
    import binascii

    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise RequestError(f"{where} holds bytes: send them as base64 text, not a JSON {json_type(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            f"{where} holds bytes: send them as base64 text (e.g. base64.b64encode(data).decode()); this is not "
            "valid base64"
        ) from None


def _filled(value: Any) -> bool:
    return value is not None and not (isinstance(value, (str, bytes, list, dict)) and len(value) == 0)


def json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )
