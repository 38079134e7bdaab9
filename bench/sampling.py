"""The bench's `sampling` section: TRAIN_SAMPLING_STRATEGY = group_by_length (the pooled sampler,
ml_exp.steps.sampling) against random, on the same data and seeds: training samples/s (ratio) and
test accuracy / macro-F1 (mean and spread over the seeds), so that `auto` is set from both.

Corpora:
- demo: the template's demo as baked (DOCUMENT_STRATEGY = chunks: every window MAX_LENGTH long
  but each document's last, so length tells a window's position in its document);
- imbalanced demo: the demo's documents with a few sentences each (one window), one frequent type
  and three rare ones, CLASS_WEIGHTS = balanced (the corpus the Trainer's megabatch grouping broke:
  macro-F1 0.37 vs 1.00);
- mixed, tiny BERT / MiniLM: the bench's own documents, word counts log-uniform 10-505.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from ml_exp.storage.layout import model_key

SEEDS = (1, 2, 3)
STRATEGIES = ("random", "group_by_length")
IMBALANCED = (
    '    keep = {"contract": 240, "audit_report": 16, "invoice": 16, "policy": 16}\n'
    "    for record in demo_documents.documents(240, seed=ctx.config.seed, sentences=(1, 3)):\n"
    '        if int(record["id"].rsplit("-", 1)[1]) < keep[record["label"]]:\n'
    "            yield record\n"
)
UNIFORM = "    yield from demo_documents.documents(DOCUMENTS_PER_LABEL, seed=ctx.config.seed)\n"


def _demo(bench: Any, run: Any, name: str, imbalanced: bool) -> Path:
    """A baked demo experiment (the template's experiment.py; imbalanced: short, skewed records)."""
    subprocess.run([str(run.BIN / "cookiecutter"), str(run.ROOT), "--no-input", "-o", str(bench.work), "ticket=EXP-9001",
                    f"model_slug={name}", f"runtime_requirement=ml-exp @ {run.ROOT.as_uri()}"], check=True, capture_output=True)
    project = bench.work / f"EXP-9001-{name}"
    if imbalanced:
        module = project / "experiment.py"
        source = module.read_text()
        assert UNIFORM in source, "the demo's reconcile changed: update bench/sampling.py"
        module.write_text(source.replace(UNIFORM, IMBALANCED))
    return project


def _metrics(manifest: dict[str, Any], model: str) -> dict[str, float]:
    return manifest["steps"]["inference"]["metrics"][model]


def _one(run: Any, bench: Any, project: Path, what: str, env: dict[str, str], model: str) -> dict[str, float]:
    """One exp run (a new run, every step) in ``project``; its test metrics and training speed."""
    store = project / ".exp-store" / project.name
    got = run.measure(bench.name(what), [run.EXP, "run", "-q"], env, project, bench.logs)
    num = max(int(p.name.split("_")[1]) for p in store.glob("run_*") if (p / "manifest.json").is_file())
    manifest = json.loads((store / f"run_{num}" / "manifest.json").read_text())
    summary = json.loads((store / f"run_{num}" / "models" / model_key(model) / "training_metrics.json").read_text())
    test = _metrics(manifest, model)
    got.update(accuracy=test["accuracy"], f1_macro=test["f1_macro"], trainer_sps=summary["train_samples_per_second"],
               sampling=summary.get("train_sampling_strategy", "random"), training_s=manifest["steps"]["training"]["duration_s"])
    shutil.rmtree(store / f"run_{num}", ignore_errors=True)
    return got


def cases(bench: Any, run: Any) -> list[tuple[str, Path, str, dict[str, str]]]:
    """(name, experiment folder, model, settings) of each corpus."""
    demo = _demo(bench, run, "demo", imbalanced=False)
    skewed = _demo(bench, run, "imbalanced", imbalanced=True)
    def mixed(model: str, docs: int, max_length: int, **more: str) -> dict[str, str]:
        return bench.settings(model, max_length=max_length, batch=16, n=docs, words=run.CORPORA["mixed"]) | {
            "NUM_TRAIN_EPOCHS": "2", **more}

    return [
        ("demo (chunks: a window's length tells its position)", demo, "tiny-bert", run.base_env()),
        ("imbalanced demo, short records (~174 training records)", skewed, "tiny-bert",
         run.base_env(DOCUMENT_STRATEGY="truncate", SPLIT_RATIOS="0.6,0.2,0.2", NUM_TRAIN_EPOCHS=10, CLASS_WEIGHTS="balanced")),
        ("mixed lengths, tiny BERT (1,000 documents, MAX_LENGTH 512)", bench.experiment, "tiny-bert",
         mixed("tiny-bert", 1000, run.MIXED_MAX_LENGTH, LEARNING_RATE="2e-3")),  # at 5e-5 it stays at chance
        ("mixed lengths, real MiniLM (240 documents, MAX_LENGTH 256)", bench.experiment, "minilm",
         mixed("minilm", 240, 256, SPLIT_RATIOS="0.6,0.2,0.2")),
    ]


def sampling(bench: Any, run: Any) -> None:
    only = [part for part in os.environ.get("BENCH_SAMPLING_CASES", "").split(",") if part]  # e.g. "MiniLM"
    seeds = tuple(int(s) for s in os.environ.get("BENCH_SAMPLING_SEEDS", "").split(",") if s) or SEEDS
    for corpus, project, model, env in cases(bench, run):
        if only and not any(part in corpus for part in only):
            continue
        results: dict[str, list[dict[str, float]]] = {s: [] for s in STRATEGIES}
        for seed in seeds:
            order = STRATEGIES if seed % 2 else STRATEGIES[::-1]  # interleaved, as every bench pair
            for strategy in order:
                got = _one(run, bench, project, f"sampling-{model}-{strategy}-{seed}",
                           {**env, "SEED": str(seed), "TRAIN_SAMPLING_STRATEGY": strategy}, model)
                results[strategy].append(got)
                run.say(f"sampling {corpus} seed {seed} {strategy}: accuracy {got['accuracy']:.3f}, macro-F1 {got['f1_macro']:.3f}, "
                        f"{got['trainer_sps']:.1f} samples/s")
        bench.raw[f"sampling {corpus}"] = results
        pairs = [{"ml-exp": g, "baseline": r} for g, r in zip(results["group_by_length"], results["random"])]
        bench.row("sampling", f"{corpus}: training samples/s, group_by_length / random", pairs, "trainer_sps", "samples/s",
                  "> 1.0", lambda r: r > 1.0, baseline_name="random (the same seeds)")
        for metric in ("accuracy", "f1_macro"):
            grouped = [g[metric] for g in results["group_by_length"]]
            shuffled = [r[metric] for r in results["random"]]
            spread = max(statistics.pstdev(shuffled), statistics.pstdev(grouped), 0.01)
            within = statistics.mean(grouped) >= statistics.mean(shuffled) - spread
            bench.rows.append({
                "section": "sampling", "measurement": f"{corpus}: test {metric} over seeds {', '.join(map(str, seeds))}",
                "unit": metric, "baseline": "random", "ml_exp": statistics.mean(grouped),
                "baseline_value": statistics.mean(shuffled), "ratio": None, "ratios": [], "values": grouped,
                "goal": "within the seeds' spread", "met": within, "ratio_kind": "",
                "note": f"group_by_length {', '.join(f'{v:.3f}' for v in grouped)}; random {', '.join(f'{v:.3f}' for v in shuffled)}",
            })
