"""The bench's report: the machine it ran on (device named) and the table of rows."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, str]:
    from importlib import metadata

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0")
    device = "CPU"
    try:  # the bench runs on the GPU when there is one (both sides): name it
        import torch

        if torch.cuda.is_available():
            device = f"CUDA: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    except ImportError:
        pass
    versions = {name: metadata.version(name) for name in ("torch", "transformers", "datasets", "accelerate", "tokenizers", "ml-exp")}
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") + (" + uncommitted runtime changes" if git("status", "--porcelain", "runtime") else "")
    return {"device": device, "cpu": cpu, "cores": str(os.cpu_count()), "memory_gb": f"{int(memory) / 1024 / 1024:.1f}",
            "python": platform.python_version(), **versions, "ml_exp_commit": commit}


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "":  # accuracy
        return f"{value:.3f}"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| # | measurement | ml-exp | baseline | ratio | goal | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        baseline = "—" if r["baseline_value"] is None else f"{_fmt(r['baseline_value'], r['unit'])} ({r['baseline']})"
        unit = "" if r["unit"] in ("s", "MB") else f" {r['unit']}"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        note = f" — {r['note']}" if r.get("note") else ""
        lines.append(f"| {r['section']} | {r['measurement']}{note} | {_fmt(r['ml_exp'], r['unit'])}{unit} | {baseline} | "
                     f"{ratio} | {r['goal'] or '—'} | {met} |")
    return "\n".join(lines)
