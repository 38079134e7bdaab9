"""`make bench`'s GPU section (issue 22 item 4): what a GPU changes, measured where there is one.

With CUDA: MiniLM on the mixed-length corpus, ml-exp against ml-exp (the same base run, forked),
``MIXED_PRECISION = bf16`` against ``no``: training samples/s (the Trainer's) and inference docs/s
(the step's duration; on a GPU the inference step batches by tokens, toolkit/scoring.length_batches),
and bf16 inference against the bare fp32 forward (baseline_infer.py). Without CUDA every row says
"not run" and why: nothing about a GPU is assumed from a CPU run. Used by bench/run.py (``--only gpu``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

SECTION = "10 GPU"
TRAIN_DOCS = 512  # 32 batches of 16: a GPU trains them in seconds
ROWS = (
    "training, MiniLM mixed lengths: samples/s, MIXED_PRECISION = bf16 vs no",
    "inference, MiniLM mixed lengths: docs/s, MIXED_PRECISION = bf16 vs no (batches by tokens both)",
    "inference, MiniLM mixed lengths: docs/s, bf16 vs the bare fp32 forward",
)


def gpu_name(python: str) -> str | None:
    """The CUDA device's name as torch sees it, None without one (asked in a subprocess)."""
    probe = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False).stdout.strip()
    return out.splitlines()[-1] if out else None


def run_section(bench: Any, run: Any, say: Callable[[str], None]) -> None:
    """The section's rows in ``bench`` (a bench/run.py ``Bench``; ``run``: that module)."""
    name = gpu_name(run.PYTHON)
    if name is None:
        say("gpu: no CUDA device on this machine: the GPU rows say 'not run'")
        for measurement in ROWS:
            bench.rows.append({
                "section": SECTION, "measurement": measurement, "unit": "", "baseline": "", "ml_exp": None,
                "baseline_value": None, "ratio": None, "ratios": [], "goal": "", "met": None, "ratio_kind": "",
                "note": "not run: no GPU on this machine (torch.cuda.is_available() is False)",
            })
        return
    size = run.TRAIN[("minilm", "mixed")]
    say(f"gpu: {name}; MiniLM, mixed lengths, {TRAIN_DOCS} training docs, {run.INFER_MINILM_TEST} test docs, bf16 vs no")
    env = bench.settings("minilm", max_length=size["max_length"], batch=size["batch"], words=run.CORPORA["mixed"],
                         splits=f"train:{TRAIN_DOCS},validation:64,test:{run.INFER_MINILM_TEST}")
    env["DOCUMENT_STRATEGY"] = run.TRUNCATE
    base = bench.base_run("gpu-minilm-mixed", "reconciliation,preparation,training", env)

    def train(precision: str) -> dict:
        num = bench.fork(base, ("data",), "training")
        got = bench.exp(f"gpu-train-{precision}", ["run", "--run", str(num), "--steps", "training"], {**env, "MIXED_PRECISION": precision})
        got["trainer_sps"] = json.loads((bench.run_dir(num) / "models" / "minilm" / "training_metrics.json").read_text())["train_samples_per_second"]
        bench.drop(num)
        return got

    def infer(precision: str) -> dict:
        num = bench.fork(base, ("data", "models"), "inference")
        got = bench.exp(f"gpu-infer-{precision}", ["run", "--run", str(num), "--steps", "inference"], {**env, "MIXED_PRECISION": precision})
        got["docs_per_s"] = run.INFER_MINILM_TEST / bench.step_duration(num, "inference")
        bench.drop(num)
        return got

    def bare() -> dict:
        result = bench.work / "gpu-bare-infer.json"
        got = bench.python("gpu-bare-infer", "baseline_infer.py", [
            "--data", str(bench.run_dir(base) / "data" / "prepared" / "minilm"), "--model-dir",
            str(bench.run_dir(base) / "models" / "minilm"), "--batch-size", str(run.EVAL_BATCH), "--result", str(result)], env)
        got["docs_per_s"] = run.INFER_MINILM_TEST / json.loads(result.read_text())["elapsed_s"]
        return got

    training = bench.interleaved("gpu training bf16 | no", lambda: train("bf16"), lambda: train("no"))
    bench.row(SECTION, ROWS[0], training, "trainer_sps", "samples/s", "", None, baseline_name="MIXED_PRECISION = no", note=name)
    inference = bench.interleaved("gpu inference bf16 | no", lambda: infer("bf16"), lambda: infer("no"))
    bench.row(SECTION, ROWS[1], inference, "docs_per_s", "docs/s", "", None, baseline_name="MIXED_PRECISION = no", note=name)
    against_bare = bench.interleaved("gpu inference bf16 | bare fp32", lambda: infer("bf16"), bare)
    bench.row(SECTION, ROWS[2], against_bare, "docs_per_s", "docs/s", "", None, baseline_name="bare fp32 forward", note=name)
