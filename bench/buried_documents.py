"""The bench's `buried_documents` section (issue 27 item 3): real passages buried in long documents.

The corpus: five licence families (apache, bsd, gpl, mit, psf). Each document is one real excerpt
(``PASSAGE_WORDS`` words, contiguous) of a licence text of its family, buried at the start, in the
middle or at the end of ~1,500 MiniLM tokens of neutral filler. The licence texts are the ones the
installed packages ship (``*.dist-info`` licence files of this Python's site-packages, and the GNU
texts of Debian's ``/usr/share/common-licenses``); the filler is sentences of the docstrings of
Python's standard library, drawn from one pool for every family (sentences that mention a licence
or copyright left out), so the filler does not tell the families apart: only the passage does.

Every DOCUMENT_STRATEGY (and, for chunks, both CHUNK_TRAINING modes) trains the real MiniLM through
``exp run`` (bench/experiment.py, ``BENCH_RECORDS = buried``), on the same records and seeds; the
rows are the test split's accuracy per position (from the run's predictions) and overall, with
the wall time and peak memory of each run. Every run's result is also appended to
``out/bench/buried_documents.jsonl`` as it ends, so that a long bench that is stopped keeps what
it measured. ``BENCH_BURIED_SEEDS`` (e.g. ``1``), ``BENCH_BURIED_PER_LABEL`` and
``BENCH_BURIED_MODES`` (e.g. ``truncate,document``; ``document_grad4`` adds CHUNK_GRAD_WINDOWS = 4,
``document_only`` CHUNK_WINDOW_EPOCHS = 0)
size a smoke run or add a mode; ``BENCH_BURIED_SETTINGS`` (``KEY=value,...``) overrides settings of every run.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import statistics
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LABELS = ("apache", "bsd", "gpl", "mit", "psf")
POSITIONS = ("start", "middle", "end")
PER_LABEL = 40  # 200 documents, positions cycling start / middle / end
PASSAGE_WORDS = 80  # about 105 MiniLM tokens (a paragraph): most of one window of MAX_LENGTH 128, or across two
FILLER_WORDS = 880  # about 1,500 MiniLM tokens of docstring prose (1,100 words measured 1,880)
MAX_LENGTH, STRIDE, MAX_CHUNKS = 128, 32, 0  # 0: every window of the ~16 per document is trained
EPOCHS, LEARNING_RATE = 3, "1e-4"
# 80 training documents (1,280 windows), 20 to pick the best epoch, 100 test documents (~33 per
# position); each chunks run trains on ~3,800 windows (about 13 minutes on one shared core)
SPLITS = "0.4,0.1,0.5"
# a buried passage is one window of ~16: each class's highest window probability finds it, where the
# mean over the windows dilutes it with filler (the same for both chunks modes, at inference too)
AGGREGATION = "max"
SEEDS = (1, 2, 3)
# mode -> (DOCUMENT_STRATEGY, CHUNK_TRAINING, rows per batch, CHUNK_GRAD_WINDOWS): a document-trained
# batch holds whole documents (PER_DEVICE_TRAIN_BATCH_SIZE counts documents there): one of ~16
# windows, so that it takes 80 optimizer steps an epoch for the same windows (window training: 160)
MODES = {
    "truncate": ("truncate", "windows", 8, 0),
    "head_tail": ("head_tail", "windows", 8, 0),
    "windows": ("chunks", "windows", 8, 0),
    "document": ("chunks", "document", 1, 0),  # CHUNK_WINDOW_EPOCHS 1 (the default): windows first
    "document_grad4": ("chunks", "document", 1, 4),  # only each document's 4 most confident windows with gradients
    "document_only": ("chunks", "document", 1, 0),  # CHUNK_WINDOW_EPOCHS 0: the document loss from the first step
}
EXTRA = {"document_only": {"CHUNK_WINDOW_EPOCHS": "0"}}  # settings a mode adds
DEFAULT_MODES = ("truncate", "head_tail", "windows", "document")  # document_grad4: BENCH_BURIED_MODES
RESULTS = Path(__file__).resolve().parents[1] / "out" / "bench" / "buried_documents.jsonl"


# --- the corpus ------------------------------------------------------------------------------------


def _family(text: str) -> str | None:
    """The licence family of a whole licence text, by its own wording (None: another or a bundle)."""
    head, words = text[:400], len(text.split())
    if "Apache License" in head and "Version 2.0" in head and words < 2000:
        return "apache"
    if re.search(r"GNU (LESSER |LIBRARY )?GENERAL PUBLIC LICENSE", head) and "TERMS AND CONDITIONS" in text:
        return "gpl"
    if text.lstrip().startswith("A. HISTORY OF THE SOFTWARE") and "PYTHON SOFTWARE FOUNDATION LICENSE" in text:
        return "psf"
    if words < 400 and "Permission is hereby granted, free of charge" in text:
        return "mit"
    if words < 400 and "Redistribution and use in source and binary forms" in text:
        return "bsd"
    return None


def licence_texts() -> dict[str, list[str]]:
    """Each family's distinct licence texts (whitespace normalised), from the installed packages."""
    site = Path(sysconfig.get_paths()["purelib"])
    names = re.compile(r"^(LICEN[CS]E|COPYING)", re.IGNORECASE)
    files = sorted(p for p in site.glob("*.dist-info/**/*") if p.is_file() and names.match(p.name))
    files += sorted(p for p in Path("/usr/share/common-licenses").glob("*GPL*") if p.is_file())
    texts: dict[str, list[str]] = {label: [] for label in LABELS}
    for path in files:
        raw = path.read_text(errors="replace")
        family = _family(raw)
        text = " ".join(raw.split())
        if family and text not in texts[family]:
            texts[family].append(text)
    missing = [label for label, found in texts.items() if not found]
    if missing:
        raise SystemExit(f"buried_documents: no installed licence text of the famil(ies) {', '.join(missing)} "
                         f"(looked in {site}/*.dist-info and /usr/share/common-licenses)")
    return texts


def filler_sentences() -> list[str]:
    """Sentences of the standard library's docstrings (modules, classes, functions), none about a
    licence or copyright, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = re.compile(r"licen[cs]|copyright|warrant|redistribut|permission", re.IGNORECASE)
    sentences: list[str] = []
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node) or ""
                for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                    if 6 <= len(sentence.split()) <= 40 and not skip.search(sentence):
                        sentences.append(sentence)
    return sentences


def documents(per_label: int, seed: int, filler_words: int = FILLER_WORDS) -> Iterator[dict[str, Any]]:
    """``per_label`` documents of each family: ``<family>-<position>-<k>`` ids, the position
    cycling start / middle / end."""
    rng = random.Random(seed)
    texts, pool = licence_texts(), filler_sentences()
    for label in LABELS:
        for k in range(per_label):
            position = POSITIONS[k % len(POSITIONS)]
            words = rng.choice(texts[label]).split()
            at = rng.randint(0, max(len(words) - PASSAGE_WORDS, 0))
            passage = " ".join(words[at : at + PASSAGE_WORDS])
            filler, count = [], 0
            while count < filler_words:
                sentence = rng.choice(pool)
                filler.append(sentence)
                count += len(sentence.split())
            where = {"start": 0, "middle": len(filler) // 2, "end": len(filler)}[position]
            text = " ".join(filler[:where] + [passage] + filler[where:])
            yield {"id": f"{label}-{position}-{k:04d}", "text": text, "label": label}


# --- the section ---------------------------------------------------------------------------------


def accuracy_by_position(predictions: list[dict[str, Any]]) -> dict[str, float]:
    shares = {}
    for position in (*POSITIONS, "overall"):
        rows = [p for p in predictions if position == "overall" or p["id"].split("-")[-2] == position]
        shares[position] = sum(p["true_label"] == p["predicted_label"] for p in rows) / max(len(rows), 1)
    return shares


def _one(bench: Any, mode: str, seed: int, per_label: int) -> dict[str, Any]:
    """One `exp run` (every step, a new run) of ``mode``; its test accuracy per position, time, memory."""
    import pyarrow.parquet as pq

    strategy, training, batch, grad_windows = MODES[mode]
    # BENCH_BURIED_FILLER_WORDS (e.g. 0: the passages alone, what the model can learn of them at all)
    filler = os.environ.get("BENCH_BURIED_FILLER_WORDS", str(FILLER_WORDS))
    env = bench.settings("minilm", max_length=MAX_LENGTH, batch=batch, records="buried", n=per_label,
                         buried_filler_words=filler)
    env.update(DOCUMENT_STRATEGY=strategy, CHUNK_STRIDE=str(STRIDE), MAX_CHUNKS=str(MAX_CHUNKS),
               NUM_TRAIN_EPOCHS=str(EPOCHS), LEARNING_RATE=LEARNING_RATE, SPLIT_RATIOS=SPLITS, SEED=str(seed))
    if strategy == "chunks":
        env.update(CHUNK_TRAINING=training, CHUNK_AGGREGATION=AGGREGATION)
    if grad_windows:
        env["CHUNK_GRAD_WINDOWS"] = str(grad_windows)
    env.update(EXTRA.get(mode, {}))
    # e.g. "LEARNING_RATE=3e-4,CHUNK_AGGREGATION=mean": settings of every run of this bench (investigations)
    env.update(part.split("=", 1) for part in os.environ.get("BENCH_BURIED_SETTINGS", "").split(",") if part)
    got = bench.exp(f"buried-{mode}-{seed}", ["run"], env)
    num = bench.latest_run()
    predictions = pq.read_table(bench.run_dir(num) / "inference" / "minilm" / "predictions.parquet").to_pylist()
    manifest = bench.manifest(num)
    coverage = manifest["steps"]["preparation"]["models"]["minilm"]["documents"]["splits"]
    result = {
        "mode": mode, "seed": seed, "settings": os.environ.get("BENCH_BURIED_SETTINGS", ""), "filler_words": int(filler), "documents": per_label * len(LABELS), **accuracy_by_position(predictions),
        "wall_s": got["wall_s"], "maxrss_mb": got["maxrss_mb"], "foreign_cores": got["foreign_cores"],
        "training_s": manifest["steps"]["training"]["duration_s"], "test_documents": len(predictions),
        "tokens_median": (coverage["train"].get("tokens") or {}).get("median"),
        "windows_median": coverage["train"]["windows_per_document"]["median"],
        "share_seen": coverage["test"].get("share_seen"),
    }
    bench.drop(num)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result) + "\n")
    return result


def run_section(bench: Any, say: Callable[[str], None]) -> None:
    """The section's rows in ``bench`` (a bench/run.py ``Bench``)."""
    seeds = tuple(int(s) for s in os.environ.get("BENCH_BURIED_SEEDS", "").split(",") if s) or SEEDS
    per_label = int(os.environ.get("BENCH_BURIED_PER_LABEL", PER_LABEL))
    modes = [m for m in os.environ.get("BENCH_BURIED_MODES", "").split(",") if m] or list(DEFAULT_MODES)
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit(f"BENCH_BURIED_MODES: unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    say(f"buried documents: {per_label * len(LABELS)} documents ({', '.join(LABELS)} licence passages in ~1,500 tokens of "
        f"docstring filler), MiniLM, MAX_LENGTH {MAX_LENGTH}, stride {STRIDE}, {EPOCHS} epochs, seeds {seeds}")
    section = "9 buried documents (real licence passages), MiniLM"
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for seed in seeds:
        for mode in (modes[::-1] if seed % 2 else modes):  # interleaved, as every bench pair (document first)
            got = _one(bench, mode, seed, per_label)
            results[mode].append(got)
            say(f"buried {mode} seed {seed}: " + " / ".join(f"{p} {got[p]:.2f}" for p in (*POSITIONS, "overall"))
                + f"; {got['wall_s']:.0f} s, {got['maxrss_mb']:.0f} MB, {got['tokens_median']} tokens (median)")
    bench.raw["buried documents"] = results
    for mode, runs in results.items():
        mean = {p: statistics.mean(r[p] for r in runs) for p in (*POSITIONS, "overall")}
        bench.value_row(section, f"test accuracy, {mode} (start / middle / end: "
                        + " / ".join(f"{mean[p]:.2f}" for p in POSITIONS) + f"; mean of {len(runs)} seeds)",
                        [r["overall"] for r in runs], "accuracy",
                        ">= 0.7 at middle and end" if mode == "document" else "",
                        (lambda v, m=mean: min(m["middle"], m["end"]) >= 0.7) if mode == "document" else None,
                        note=f"per seed {', '.join(format(r['overall'], '.2f') for r in runs)}; run wall "
                             f"{statistics.median(r['wall_s'] for r in runs):.0f} s, peak RSS "
                             f"{statistics.median(r['maxrss_mb'] for r in runs):.0f} MB (medians)")
