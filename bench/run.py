"""`make bench`: ml-exp's steps side by side with bare baselines, as ratios (docs/benchmarks.md).

    .venv/bin/python bench/run.py [--reps 3] [--only training,preparation,...] [--threads 1] [--keep]

Every measurement runs in its own process, ml-exp and its baseline interleaved (A B, then B A,
...), ``--reps`` times; the table shows the median of the per-repetition ratios (and the
medians of the raw values). ml-exp is driven as a user drives it: a baked experiment whose
experiment.py is bench/experiment.py, settings through environment variables, and
``exp run --run N --steps <step>`` on a copy ("fork") of a base run that holds the step's
inputs, so that each repetition runs exactly one step, from scratch, through the real CLI.

Results: the table on stdout, and out/bench/results.md + results.json (every repetition).
Not a test: nothing asserts a time; CI does not run it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
EXP = str(BIN / "exp")
PYTHON = sys.executable
RESULTS = ROOT / "out" / "bench"
EXPERIMENT = "EXP-9000-bench"
SECTIONS = ("cli", "reconciliation", "preparation", "inference", "training", "sampling", "serving", "long_documents", "scale", "buried_documents",
            "gpu")
OPT_IN = ("buried_documents",)  # hours, not minutes: run only when named in --only
# torch threads of every measured process, both sides (OMP_NUM_THREADS). 1 by default: on a
# shared 2-core machine a 1-thread process keeps its speed while another process is busy, where
# 2 OpenMP threads slow down erratically (spinning barriers). --threads 2 measures ml-exp's
# own default on this machine (cores // NUM_PROCESSES).
THREADS = os.environ.get("BENCH_THREADS", "1")

# Sizes: the whole bench takes about 17 minutes on 2 cores (12 without the serving section).
# Corpora (BENCH_WORDS): uniform = every document ~120 words (past MAX_LENGTH 64/128: all rows
# equally long once truncated); mixed = word counts log-uniform over bench_models.MIXED_WORDS,
# ~16 to 512 tokens at MAX_LENGTH 512, as real documents vary from a paragraph to many pages.
CORPORA = {"uniform": "120", "mixed": "10-505"}
MIXED_MAX_LENGTH = 512
TRAIN = {  # (model, corpus) -> documents reconciled (split 0.8/0.1/0.1), max length, batch size
    ("tiny-bert", "uniform"): {"docs": 4000, "max_length": 64, "batch": 16},
    ("minilm", "uniform"): {"docs": 240, "max_length": 64, "batch": 16},
    ("tiny-bert", "mixed"): {"docs": 1000, "max_length": MIXED_MAX_LENGTH, "batch": 16},
    ("minilm", "mixed"): {"docs": 80, "max_length": MIXED_MAX_LENGTH, "batch": 16},
}
PREPARE_DOCS, PREPARE_MAX_LENGTH = 20_000, {"uniform": 128, "mixed": MIXED_MAX_LENGTH}
PREPARE_STRIDE = 32  # chunks: tokens two neighbouring windows share
TRUNCATE, CHUNKS = "truncate", "chunks"
INFER_MINILM_TEST = 400
INFER_TINY_TEST = 2000  # and 10x that
INFER_TRAIN_SPLITS = "train:64,validation:16"
RECONCILE_RECORDS = 1_000_000
SERVE_RECORDS = 480  # records posted per measurement (the base run's records, repeated)
SERVE_CASES = {  # name -> (client threads, records per request, records used)
    "1 client, 1 record a request": (1, 1, 100),
    "16 clients, 1 record a request": (16, 1, SERVE_RECORDS),
    "4 clients, 16 records a request": (4, 16, SERVE_RECORDS),
}
EVAL_BATCH = 16

started = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)


# --- processes ---------------------------------------------------------------------------------


def base_env(**settings: Any) -> dict[str, str]:
    """The environment of every measured process (both sides): same threads, offline, quiet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "WANDB_"))}
    env.update(
        OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS, WANDB_MODE="disabled",
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
        TQDM_DISABLE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1", PYTHONWARNINGS="ignore",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update({k: str(v) for k, v in settings.items()})
    return env


class Measured(dict):
    """wall_s (perf_counter around the process), maxrss_mb (the largest process of its tree,
    from wait4), anon_mb / file_mb (the largest process's peak anonymous memory, its heap, and
    peak file-backed resident pages, memory-mapped files the kernel may drop: sampled from
    /proc every 50 ms), cpu_s (its tree's CPU time), foreign_cores (CPU used meanwhile by
    processes that are not ours, in cores: other work on the machine disturbs a measurement), log."""


class MemorySampler:
    """Peak RssAnon and RssFile (MB) of any one process of a process tree, sampled on a thread."""

    def __init__(self, pid: int, every_s: float = 0.05):
        import threading

        self.pid, self.every_s, self.anon, self.file = pid, every_s, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                tree = [self.pid, *(c.pid for c in psutil.Process(self.pid).children(recursive=True))]
            except psutil.Error:
                tree = [self.pid]
            for pid in tree:
                try:
                    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
                    self.anon = max(self.anon, int(fields["RssAnon"].split()[0]) / 1024)
                    self.file = max(self.file, int(fields["RssFile"].split()[0]) / 1024)
                except (OSError, KeyError, ValueError):
                    continue
            self._stop.wait(self.every_s)

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        return self.anon, self.file


def busy_cpu_s() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores, /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


QUIET_CORES = 0.5  # foreign load above this (in cores) marks a measurement as disturbed
BUSY_CORES = 1.0  # before a measurement, wait while other processes use more than this
_waited = [0.0]


def wait_for_quiet(budget_s: float = 90.0) -> None:
    """Before a measurement: while other processes keep more than BUSY_CORES busy, wait (at
    most ``budget_s`` over the whole bench, so that it still ends in time)."""
    while _waited[0] < budget_s:
        before, t0 = busy_cpu_s(), time.perf_counter()
        time.sleep(0.5)
        elapsed = time.perf_counter() - t0
        if (busy_cpu_s() - before) / elapsed <= BUSY_CORES:
            return
        _waited[0] += elapsed
        if _waited[0] >= budget_s:
            say(f"the machine is busy with other processes; measuring anyway (waited {budget_s:.0f} s in all)")


def measure(name: str, command: list[str], env: dict[str, str], cwd: Path, logs: Path) -> Measured:
    log = logs / f"{name}.log"
    wait_for_quiet()
    with open(log, "w") as out:
        busy0, own0 = busy_cpu_s(), _own_cpu_s()
        t0 = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        memory = MemorySampler(process.pid)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - t0
        anon, file = memory.stop()
        busy = busy_cpu_s() - busy0
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{name} failed (exit {process.returncode}): {' '.join(command)}\n--- {log} ---\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    foreign = max(0.0, busy - cpu - (_own_cpu_s() - own0)) / wall
    measured = Measured(name=name, wall_s=wall, maxrss_mb=usage.ru_maxrss / 1024, anon_mb=anon, file_mb=file, cpu_s=cpu,
                        foreign_cores=foreign, log=str(log))
    MEASURED.append(measured)
    return measured


MEASURED: list[Measured] = []


def _own_cpu_s() -> float:
    usage = os.times()
    return usage.user + usage.system


def median(values: list[float]) -> float:
    return statistics.median(values)


# --- the bench experiment and its runs ---------------------------------------------------------


class Bench:
    def __init__(self, work: Path, reps: int, corpora: tuple[str, ...] = tuple(CORPORA)):
        self.work, self.reps, self.corpora = work, reps, corpora
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.experiment = self._bake()
        self.store_dir = self.experiment / ".exp-store" / EXPERIMENT
        self.rows: list[dict[str, Any]] = []
        self.raw: dict[str, Any] = {}
        self.counter = 0

    def _bake(self) -> Path:
        subprocess.run([str(BIN / "cookiecutter"), str(ROOT), "--no-input", "-o", str(self.work), "ticket=EXP-9000",
                        "model_slug=bench", f"runtime_requirement=ml-exp @ {ROOT.as_uri()}"],
                       check=True, capture_output=True)
        experiment = self.work / EXPERIMENT
        for name in ("experiment.py", "bench_models.py", "long_documents.py", "buried_documents.py"):
            shutil.copy(BENCH / name, experiment / name)
        return experiment

    def name(self, what: str) -> str:
        self.counter += 1
        return f"{self.counter:03d}-{what}"

    def settings(self, model: str, max_length: int = 64, batch: int = 16, **bench: Any) -> dict[str, str]:
        return base_env(
            MODEL_NAMES=model, NUM_TRAIN_EPOCHS=1, MAX_LENGTH=max_length, PER_DEVICE_TRAIN_BATCH_SIZE=batch,
            PER_DEVICE_EVAL_BATCH_SIZE=EVAL_BATCH, LEARNING_RATE="5e-5", WARMUP_RATIO=0, WEIGHT_DECAY=0,
            EARLY_STOPPING_PATIENCE=0, NUM_PROCESSES=1, SEED=42, SPLIT_RATIOS="0.8,0.1,0.1",
            RUN_TUNING="false", **{f"BENCH_{k.upper()}": v for k, v in bench.items()},
        )

    def exp(self, what: str, args: list[str], env: dict[str, str]) -> Measured:
        return measure(self.name(what), [EXP, *args], env, self.experiment, self.logs)

    def python(self, what: str, script: str, args: list[str], env: dict[str, str]) -> Measured:
        return measure(self.name(what), [PYTHON, str(BENCH / script), *args], env, self.experiment, self.logs)

    def latest_run(self) -> int:
        return max(int(p.name.split("_")[1]) for p in self.store_dir.glob("run_*") if (p / "manifest.json").is_file())

    def run_dir(self, num: int) -> Path:
        return self.store_dir / f"run_{num}"

    def manifest(self, num: int) -> dict[str, Any]:
        return json.loads((self.run_dir(num) / "manifest.json").read_text())

    def base_run(self, what: str, steps: str, env: dict[str, str]) -> int:
        """A run that holds the inputs of the step to measure (made once, never measured)."""
        self.exp(f"base-{what}", ["run", "--steps", steps], env)
        return self.latest_run()

    def fork(self, base: int, keep: tuple[str, ...], rerun: str) -> int:
        """A new run (claimed through the store, as exp run claims one) holding a copy of the
        base run's ``keep`` folders, with ``rerun`` and the steps after it pending: ``exp run
        --run N --steps <rerun>`` then runs that one step as on a resumed run."""
        from ml_exp.config import STEPS
        from ml_exp.storage.store import Store

        manifest = self.manifest(base)
        pending = set(STEPS[STEPS.index(rerun):])

        def initial(num: int) -> dict[str, Any]:
            m = {k: v for k, v in manifest.items() if k not in ("run", "claimed_at", "claim_token")}
            m["status"], m["bench_fork_of"] = "partial", base
            m["steps"] = {s: ({"status": "pending"} if s in pending else v) for s, v in manifest["steps"].items()}
            return m

        run = Store(f"file://{self.store_dir.parent}", EXPERIMENT).claim_run(None, initial)
        for folder in keep:
            shutil.copytree(self.run_dir(base) / folder, self.run_dir(run.num) / folder)
        return run.num

    def step_duration(self, num: int, step: str) -> float:
        state = self.manifest(num)["steps"][step]
        assert state["status"] == "completed", state
        return float(state["duration_s"])

    def drop(self, num: int) -> None:
        shutil.rmtree(self.run_dir(num), ignore_errors=True)

    def interleaved(self, what: str, mlexp: Callable[[], dict], baseline: Callable[[], dict]) -> list[dict]:
        """``reps`` pairs, the order alternating (A B, B A, ...)."""
        pairs = []
        for rep in range(self.reps):
            if rep % 2 == 0:
                a = mlexp()
                b = baseline()
            else:
                b = baseline()
                a = mlexp()
            pairs.append({"ml-exp": a, "baseline": b})
            say(f"{what} {rep + 1}/{self.reps}: ml-exp {_short(a)} | baseline {_short(b)}")
        self.raw[what] = pairs
        return pairs

    def row(self, section: str, measurement: str, pairs: list[dict], key: str, unit: str, goal: str,
            check: Callable[[float], bool] | None, higher_is_better: bool = True, baseline_key: str | None = None,
            baseline_name: str = "", note: str = "") -> None:
        """One table row: medians of both sides and the median of the per-repetition ratios."""
        a = [p["ml-exp"][key] for p in pairs]
        b = [p["baseline"][baseline_key or key] for p in pairs]
        ratios = [x / y for x, y in zip(a, b)]
        ratio = median(ratios)
        disturbed = sum(1 for p in pairs if max(p["ml-exp"].get("foreign_cores", 0), p["baseline"].get("foreign_cores", 0)) > QUIET_CORES)
        if disturbed:
            note = f"{note}; " if note else ""
            note += f"{disturbed}/{len(pairs)} repetitions disturbed by other processes"
        self.rows.append({
            "section": section, "measurement": measurement, "unit": unit, "baseline": baseline_name,
            "ml_exp": median(a), "baseline_value": median(b), "ratio": ratio, "ratios": ratios,
            "goal": goal, "met": None if check is None else bool(check(ratio)),
            "ratio_kind": "ml-exp / baseline" if higher_is_better else "ml-exp time / baseline time", "note": note,
        })

    def value_row(self, section: str, measurement: str, values: list[float], unit: str, goal: str,
                  check: Callable[[float], bool] | None, note: str = "") -> None:
        """A row without a baseline: the median value is compared with the goal."""
        value = median(values)
        self.rows.append({
            "section": section, "measurement": measurement, "unit": unit, "baseline": "", "ml_exp": value,
            "baseline_value": None, "ratio": None, "ratios": [], "values": values, "goal": goal,
            "met": None if check is None else bool(check(value)), "ratio_kind": "", "note": note,
        })

    # --- 4. CLI start --------------------------------------------------------------------------

    def cli(self) -> None:
        say("CLI start: exp --help, exp validate (baked demo) vs python -c 'import typer'")
        demo = Path(subprocess.run(
            [PYTHON, "-c", "import sys; from cookiecutter.main import cookiecutter; print(cookiecutter(sys.argv[1], no_input=True, "
             "output_dir=sys.argv[2], extra_context={'runtime_requirement': sys.argv[3]}))",
             str(ROOT), str(self.work / "demo"), f"ml-exp @ {ROOT.as_uri()}"],
            check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        env = base_env()
        reps = max(5, 2 * self.reps + 1)
        pairs, validate = [], []
        for rep in range(reps):
            order = ["typer", "help", "validate"] if rep % 2 == 0 else ["validate", "help", "typer"]
            got = {}
            for what in order:
                command = {"typer": [PYTHON, "-c", "import typer"], "help": [EXP, "--help"], "validate": [EXP, "validate"]}[what]
                got[what] = measure(self.name(f"cli-{what}"), command, env, demo, self.logs)
            pairs.append({"ml-exp": got["help"], "baseline": got["typer"], "validate": got["validate"]})
            validate.append(got["validate"]["wall_s"])
        say(f"CLI: exp --help {median([p['ml-exp']['wall_s'] for p in pairs]):.2f} s, import typer "
            f"{median([p['baseline']['wall_s'] for p in pairs]):.2f} s, exp validate {median(validate):.2f} s ({reps} reps)")
        self.raw["cli"] = pairs
        self.row("4 CLI start", "`exp --help` wall time", pairs, "wall_s", "s", "<= 1.5x", lambda r: r <= 1.5,
                 higher_is_better=False, baseline_name="`python -c 'import typer'`")
        ratios = [v / p["baseline"]["wall_s"] for v, p in zip(validate, pairs)]
        self.rows.append({**self.rows[-1], "measurement": "`exp validate` wall time (baked demo)",
                          "ml_exp": median(validate), "ratio": median(ratios), "ratios": ratios, "values": validate,
                          "goal": "<= 1.5 s", "met": median(validate) <= 1.5,
                          "note": "goal on the absolute time; ratio vs `import typer` for context"})

    # --- 5. reconciliation at scale ----------------------------------------------------------------

    def reconciliation(self) -> None:
        n = RECONCILE_RECORDS
        say(f"reconciliation: {n:,} small records, exp run --steps reconciliation vs bare pyarrow")
        env = self.settings("tiny-bert", records="small", n=n)

        def mlexp() -> dict:
            got = self.exp("reconcile-1m", ["run", "--steps", "reconciliation"], env)
            num = self.latest_run()
            got["step_s"] = self.step_duration(num, "reconciliation")
            got["records_per_s"] = n / got["step_s"]
            self.drop(num)
            return got

        def baseline() -> dict:
            result = self.work / "bare-reconcile.json"
            got = self.python("bare-reconcile-1m", "baseline_reconcile.py", ["--records", str(n), "--result", str(result)], env)
            got["step_s"] = json.loads(result.read_text())["elapsed_s"]
            got["records_per_s"] = n / got["step_s"]
            return got

        pairs = self.interleaved("reconciliation 1M", mlexp, baseline)
        section = "5 reconciliation, 1M records"
        self.value_row(section, "step wall time (manifest duration_s)", [p["ml-exp"]["step_s"] for p in pairs], "s", "", None)
        self.row(section, "records/s (step) vs bare pyarrow shards", pairs, "records_per_s", "records/s", "", None,
                 baseline_name="bare pyarrow, no checks", note="context: what the per-record checks cost")
        self.value_row(section, "peak RSS of `exp run --steps reconciliation`", [p["ml-exp"]["maxrss_mb"] for p in pairs], "MB",
                       "< 1024 MB", lambda v: v < 1024, note=f"bare pyarrow: {median([p['baseline']['maxrss_mb'] for p in pairs]):.0f} MB")

    # --- 2. preparation --------------------------------------------------------------------------

    def preparation(self) -> None:
        for corpus in self.corpora:
            self._preparation(corpus, PREPARE_MAX_LENGTH[corpus], TRUNCATE)
        self._preparation("uniform", PREPARE_MAX_LENGTH["uniform"], CHUNKS)

    def _preparation(self, corpus: str, max_length: int, strategy: str) -> None:
        """The preparation step (DOCUMENT_STRATEGY ``strategy``) against a bare ``datasets.map``
        that cuts the documents the same way: truncating, or into overlapping windows."""
        n = PREPARE_DOCS
        say(f"preparation: {n:,} documents, {corpus} lengths ({CORPORA[corpus]} words), MiniLM tokenizer, max length {max_length}, {strategy}")
        chunks = strategy == CHUNKS
        env = self.settings("minilm", max_length=max_length, n=n, words=CORPORA[corpus])
        env.update(DOCUMENT_STRATEGY=strategy, CHUNK_STRIDE=str(PREPARE_STRIDE), MAX_CHUNKS="0")  # every window, as the bare map
        base = self.base_run(f"prepare-{strategy}", "reconciliation", env)

        def mlexp() -> dict:
            num = self.fork(base, ("data",), "preparation")
            got = self.exp("prepare", ["run", "--run", str(num), "--steps", "preparation"], env)
            got["step_s"] = self.step_duration(num, "preparation")
            got["docs_per_s"] = n / got["step_s"]
            got["wall_docs_per_s"] = n / got["wall_s"]
            got["workers"] = self.manifest(num)["steps"]["preparation"]["models"]["minilm"]["workers"]
            self.drop(num)
            return got

        def baseline() -> dict:
            result = self.work / "bare-prepare.json"
            got = self.python("bare-prepare", "baseline_prepare.py", [
                "--reconciled", str(self.run_dir(base) / "data" / "reconciled"), "--max-length", str(max_length),
                "--result", str(result), *(["--stride", str(PREPARE_STRIDE)] if chunks else [])], env)
            measured = json.loads(result.read_text())
            got["step_s"] = measured["elapsed_s"]
            got["docs_per_s"] = n / got["step_s"]
            got["wall_docs_per_s"] = n / (got["wall_s"] - measured["tokenizer_s"])  # less the tokenizer-alone timing
            got["tokenizer_docs_per_s"] = n / measured["tokenizer_s"]
            return got

        pairs = self.interleaved(f"preparation {corpus} {strategy}", mlexp, baseline)
        section = f"2 preparation, {n // 1000}k docs, {corpus} lengths, {strategy}"
        workers = f"ml-exp map workers: {pairs[0]['ml-exp']['workers'] or 1}"
        if chunks:
            self.row(section, "docs/s (step duration vs in-script time, imports included)", pairs, "docs_per_s", "docs/s",
                     ">= 0.8", lambda r: r >= 0.8, baseline_name=f"bare windowing `datasets.map` (overflow, stride {PREPARE_STRIDE}) + save_to_disk",
                     note=workers)
        else:
            self.row(section, "docs/s (step duration vs in-script time, imports included)", pairs, "docs_per_s", "docs/s", ">= 1.0",
                     lambda r: r >= 1.0, baseline_name="bare `datasets.map(batched=True)` + save_to_disk", note=workers)
        self.row(section, "docs/s (step) vs the tokenizer alone", pairs, "docs_per_s", "docs/s", ">= 0.7", lambda r: r >= 0.7,
                 baseline_key="tokenizer_docs_per_s", baseline_name="the tokenizer's own batches of 1000, warm, no map",
                 note="context: the bare map reaches " + f"{median([p['baseline']['docs_per_s'] / p['baseline']['tokenizer_docs_per_s'] for p in pairs]):.2f}" + " of it (imports included on both map sides)")
        self.row(section, "docs/s over the whole process (exp CLI start included)", pairs, "wall_docs_per_s", "docs/s", "", None,
                 baseline_name="same, process wall time")

    # --- 3. inference ------------------------------------------------------------------------------

    def inference(self) -> None:
        say(f"inference: MiniLM on {INFER_MINILM_TEST} test docs; tiny BERT on {INFER_TINY_TEST} and {10 * INFER_TINY_TEST} (peak RSS)")
        cases = [("minilm", INFER_MINILM_TEST, "minilm", "uniform"), ("tiny-bert", INFER_TINY_TEST, "tiny-bert 1x", "uniform"),
                 ("tiny-bert", 10 * INFER_TINY_TEST, "tiny-bert 10x", "uniform"),
                 ("minilm", INFER_MINILM_TEST, "minilm mixed lengths", "mixed"),
                 ("tiny-bert", INFER_TINY_TEST, "tiny-bert mixed lengths", "mixed")]
        bases = {}
        for model, test, label, corpus in cases:
            if corpus not in self.corpora and "x" not in label.split()[-1]:  # the 1x/10x pair (peak RSS) always runs
                continue
            env = self.settings(model, max_length=MIXED_MAX_LENGTH if corpus == "mixed" else 64,
                                splits=f"{INFER_TRAIN_SPLITS},test:{test}", words=CORPORA[corpus])
            bases[label] = (model, test, env, self.base_run(f"infer-{label.replace(' ', '-')}", "reconciliation,preparation,training", env))

        results = {}
        for label, (model, test, env, base) in bases.items():
            def mlexp(model=model, test=test, env=env, base=base) -> dict:
                num = self.fork(base, ("data", "models"), "inference")
                got = self.exp(f"infer-{model}-{test}", ["run", "--run", str(num), "--steps", "inference"], env)
                got["step_s"] = self.step_duration(num, "inference")
                got["docs_per_s"] = test / got["step_s"]
                self.drop(num)
                return got

            def baseline(model=model, test=test, env=env, base=base) -> dict:
                result = self.work / "bare-infer.json"
                got = self.python(f"bare-infer-{model}-{test}", "baseline_infer.py", [
                    "--data", str(self.run_dir(base) / "data" / "prepared" / model),
                    "--model-dir", str(self.run_dir(base) / "models" / model), "--batch-size", str(EVAL_BATCH),
                    "--result", str(result)], env)
                got["step_s"] = json.loads(result.read_text())["elapsed_s"]
                got["docs_per_s"] = test / got["step_s"]
                return got

            results[label] = self.interleaved(f"inference {label}", mlexp, baseline)

        section = "3 inference"
        for label, pairs in results.items():
            test = bases[label][1]
            self.row(section, f"{label}: docs/s over {test:,} test docs (step duration vs in-script time)", pairs, "docs_per_s",
                     "docs/s", "", None, baseline_name="bare batched `torch.no_grad()` forward")
        one, ten = results["tiny-bert 1x"], results["tiny-bert 10x"]
        self.rows.append({
            "section": section, "measurement": f"peak RSS of the inference step, {10 * INFER_TINY_TEST:,} vs {INFER_TINY_TEST:,} test docs (tiny BERT)",
            "unit": "MB", "baseline": "the same step at 1x", "ml_exp": median([p["ml-exp"]["maxrss_mb"] for p in ten]),
            "baseline_value": median([p["ml-exp"]["maxrss_mb"] for p in one]),
            "ratio": median([b["ml-exp"]["maxrss_mb"] / a["ml-exp"]["maxrss_mb"] for a, b in zip(one, ten)]),
            "goal": "flat (<= 1.10)", "ratio_kind": "10x / 1x",
            "note": f"bare forward: {median([p['baseline']['maxrss_mb'] for p in one]):.0f} MB at 1x, "
                    f"{median([p['baseline']['maxrss_mb'] for p in ten]):.0f} MB at 10x",
        })
        self.rows[-1]["met"] = self.rows[-1]["ratio"] <= 1.10

    # --- 6. serving --------------------------------------------------------------------------------

    def long_documents(self) -> None:
        """Section 7, in bench/long_documents.py: truncate / head_tail / chunks on long documents."""
        import long_documents

        long_documents.run_section(self, say, median)

    def scale(self) -> None:
        """Section 8, in bench/scale.py: preparation of 100k and 1M short records, its peak memory."""
        import scale

        scale.run_section(self, say, median)

    def gpu(self) -> None:
        """Section 10, in bench/gpu.py: bf16 against fp32 where there is a GPU; "not run" rows elsewhere."""
        import gpu

        gpu.run_section(self, sys.modules[__name__], say)

    def buried_documents(self) -> None:
        """Section 9, in bench/buried_documents.py: real licence passages buried in long documents."""
        import buried_documents

        buried_documents.run_section(self, say)

    def serving(self) -> None:
        """`exp serve` (uvicorn, real HTTP clients in another process) vs a bare in-process
        `transformers` pipeline, on the same trained MiniLM and the same records."""
        import socket

        size = TRAIN[("minilm", "uniform")]
        say(f"serving: MiniLM trained on {size['docs']} docs (1 epoch), {SERVE_RECORDS} records, max length {size['max_length']}")
        env = self.settings("minilm", max_length=size["max_length"], batch=size["batch"], n=size["docs"])
        base = self.base_run("serve-minilm", "reconciliation,preparation,training", env)
        import pyarrow.parquet as pq

        rows = pq.read_table(sorted((self.run_dir(base) / "data" / "reconciled").glob("*.parquet"))).to_pylist()
        records = [{k: v for k, v in r.items() if k != "split"} for r in rows]
        records = (records * (SERVE_RECORDS // len(records) + 1))[:SERVE_RECORDS]
        source = self.work / "serve-records.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in records))

        def mlexp() -> dict:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            url = f"http://127.0.0.1:{port}"
            log = open(self.logs / f"{self.name('serve')}.log", "w")
            server = subprocess.Popen([EXP, "serve", "--run", str(base), "--model", "minilm", "--port", str(port)], env=env,
                                      cwd=self.experiment, stdout=log, stderr=subprocess.STDOUT)
            got: dict[str, Any] = {"foreign_cores": 0.0, "wall_s": 0.0, "maxrss_mb": 0.0}
            try:
                _wait_for(url, server)
                for case, (clients, per_request, limit) in SERVE_CASES.items():
                    result = self.work / "serve-client.json"
                    measured = self.python(f"serve-client-{clients}x{per_request}", "serving_client.py", [
                        "--url", url, "--records", str(source), "--clients", str(clients), "--per-request", str(per_request),
                        "--limit", str(limit), "--result", str(result)], base_env())
                    got[case] = json.loads(result.read_text())
                    got["foreign_cores"] = max(got["foreign_cores"], measured["foreign_cores"])
                    got["wall_s"] += got[case]["wall_s"]
            finally:
                server.terminate()
                server.wait(timeout=30)
                log.close()
            for case in SERVE_CASES:
                got[f"{case} records_per_s"] = got[case]["records_per_s"]
                got[f"{case} p50_ms"], got[f"{case} p99_ms"] = got[case]["p50_ms"], got[case]["p99_ms"]
            got["docs_per_s"] = got[f"16 clients, 1 record a request records_per_s"]
            return got

        def baseline() -> dict:
            result = self.work / "bare-serve.json"
            got = self.python("bare-pipeline", "baseline_serve.py", [
                "--model-dir", str(self.run_dir(base) / "models" / "minilm"), "--records", str(source),
                "--max-length", str(size["max_length"]), "--batch-size", str(EVAL_BATCH), "--result", str(result)], env)
            out = json.loads(result.read_text())
            got.update(records_per_s=out["records_per_s"], p50_ms=out["p50_ms"], p99_ms=out["p99_ms"], docs_per_s=out["records_per_s"])
            for case in SERVE_CASES:
                got[f"{case} records_per_s"], got[f"{case} p50_ms"], got[f"{case} p99_ms"] = out["records_per_s"], out["p50_ms"], out["p99_ms"]
            return got

        pairs = self.interleaved("serving minilm", mlexp, baseline)
        section = "6 serving, MiniLM"
        bare = f"bare in-process `transformers` pipeline, batch {EVAL_BATCH}"
        for case in ("16 clients, 1 record a request", "4 clients, 16 records a request"):
            self.row(section, f"`exp serve` records/s, {case}", pairs, f"{case} records_per_s", "records/s", ">= 0.9",
                     lambda r: r >= 0.9, baseline_name=bare)
        for case in SERVE_CASES:
            for q in ("p50", "p99"):
                self.row(section, f"`exp serve` latency {q} of a request, {case}", pairs, f"{case} {q}_ms", "ms", "",
                         None, higher_is_better=False, baseline_name="the pipeline on one record a call, one call after another")

    # --- 1. training -------------------------------------------------------------------------------

    def training(self) -> None:
        for (model, corpus), size in TRAIN.items():
            if corpus not in self.corpora:
                continue
            say(f"training {model}, {corpus} lengths: {size['docs']} docs (train split {int(size['docs'] * 0.8)}), max length {size['max_length']}, "
                f"batch {size['batch']}, 1 epoch, {THREADS} threads")
            env = self.settings(model, max_length=size["max_length"], batch=size["batch"], n=size["docs"], words=CORPORA[corpus])
            # one row per document, as the bare script's: with the template's chunks, a "uniform" corpus
            # is full windows and short last windows, and each side's shuffle then pads differently
            env["DOCUMENT_STRATEGY"] = TRUNCATE
            base = self.base_run(f"train-{model}-{corpus}", "reconciliation,preparation", env)
            data = self.run_dir(base) / "data" / "prepared" / model

            def mlexp(model=model, env=env, base=base) -> dict:
                num = self.fork(base, ("data",), "training")
                threads = self.work / f"threads-{num}"
                got = self.exp(f"train-{model}", ["run", "--run", str(num), "--steps", "training"],
                               {**env, "BENCH_THREADS_FILE": str(threads)})
                summary = json.loads((self.run_dir(num) / "models" / model / "training_metrics.json").read_text())
                got["trainer_sps"] = summary["train_samples_per_second"]
                got["samples"] = self._train_rows(num, model) * float(summary["epochs"])
                got["step_s"] = self.step_duration(num, "training")
                got["step_sps"] = got["samples"] / got["step_s"]
                got["threads"] = int(threads.read_text())
                got["accuracy"] = summary["best_eval"].get("accuracy")
                got["sampling"] = summary.get("train_sampling_strategy", "random")
                self.drop(num)
                return got

            def baseline(matched: bool, model=model, env=env, data=data, size=size) -> dict:
                result = self.work / "bare-train.json"
                got = self.python(f"bare-train-{model}{'-matched' if matched else ''}", "baseline_train.py", [
                    "--data", str(data), "--model", model, "--result", str(result), "--epochs", "1",
                    "--batch-size", str(size["batch"]), "--eval-batch-size", str(EVAL_BATCH), "--learning-rate", "5e-5",
                    "--seed", "42", *(["--matched"] if matched else [])], env)
                out = json.loads(result.read_text())
                got["trainer_sps"] = out["train_samples_per_second"]
                got["samples"] = out["train_samples"] * out["epochs"]
                got["step_s"] = got["wall_s"]
                got["step_sps"] = got["samples"] / got["wall_s"]
                got["threads"] = out["threads"]
                got["accuracy"] = out.get("accuracy")
                return got

            pairs = []
            for rep in range(self.reps):
                order = ["mlexp", "bare", "matched"] if rep % 2 == 0 else ["matched", "bare", "mlexp"]
                got = {}
                for what in order:
                    got[what] = mlexp() if what == "mlexp" else baseline(what == "matched")
                pairs.append({"ml-exp": got["mlexp"], "baseline": got["bare"], "matched": got["matched"]})
                say(f"training {model} {corpus} {rep + 1}/{self.reps}: ml-exp {_short(got['mlexp'])} | bare {_short(got['bare'])} | "
                    f"matched {_short(got['matched'])}")
            self.raw[f"training {model} {corpus}"] = pairs
            threads = {p[side]["threads"] for p in pairs for side in ("ml-exp", "baseline", "matched")}
            sampling = sorted({p["ml-exp"]["sampling"] for p in pairs})
            section = f"1 training, {model}, {corpus} lengths"
            goal = 1.25 if corpus == "mixed" else 1.0  # issue 13: grouping by length must pay where lengths vary
            self.row(section, "Trainer's train_samples_per_second", pairs, "trainer_sps", "samples/s", f">= {goal}",
                     lambda r, goal=goal: r >= goal, baseline_name="bare Trainer script (no eval/checkpoint)",
                     note=f"torch threads: {sorted(threads)}; ml-exp sampling: {', '.join(sampling)}")
            matched = [{"ml-exp": p["ml-exp"], "baseline": p["matched"]} for p in pairs]
            self.row(section, "Trainer's train_samples_per_second, vs matched baseline", matched, "trainer_sps", "samples/s",
                     "", None, baseline_name="bare Trainer + eval/checkpoint each epoch, best model reloaded")
            self.row(section, "train samples / wall time of the whole step (process launch included)", pairs, "step_sps",
                     "samples/s", ">= 0.9", lambda r: r >= 0.9, baseline_name="bare script, process wall time")
            if all(p["ml-exp"]["accuracy"] is not None and p["matched"]["accuracy"] is not None for p in pairs):
                self.row(section, "validation accuracy of the best model (1 epoch)", matched, "accuracy", "", "same within noise",
                         None, baseline_name="matched baseline")

    # --- batches of similar lengths: speed and accuracy (bench/sampling.py) ------------------------

    def sampling(self) -> None:
        import sampling

        sampling.sampling(self, sys.modules[__name__])

    def _train_rows(self, num: int, model: str) -> int:
        sizes = self.manifest(num)["steps"]["preparation"]["models"][model]["rows"]
        return int(sizes["train"])


def _wait_for(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"exp serve exited ({server.returncode}) before answering {url}/ping")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"exp serve did not answer {url}/ping in {timeout:.0f} s")


def _short(measured: dict) -> str:
    busy = f", other processes used {measured['foreign_cores']:.1f} cores" if measured["foreign_cores"] > QUIET_CORES else ""
    for key in ("trainer_sps", "docs_per_s", "records_per_s"):
        if key in measured:
            return f"{measured[key]:.1f}/s ({measured['wall_s']:.1f} s wall, {measured['maxrss_mb']:.0f} MB{busy})"
    return f"{measured['wall_s']:.2f} s{busy}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", "3")))
    parser.add_argument("--only", default="", help=f"comma separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (runs and logs)")
    parser.add_argument("--corpus", default=",".join(CORPORA), help=f"comma separated corpora of {', '.join(CORPORA)}")
    parser.add_argument("--threads", type=int, help="torch threads per process, both sides (default: BENCH_THREADS or 1)")
    args = parser.parse_args()
    global THREADS
    THREADS = str(args.threads or THREADS)
    only = [s for s in args.only.split(",") if s] or [s for s in SECTIONS if s not in OPT_IN]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    work = Path(tempfile.mkdtemp(prefix="ml-exp-bench-"))
    say(f"work folder {work}; {args.reps} repetitions; sections {', '.join(only)}")
    corpora = tuple(c for c in CORPORA if c in args.corpus.split(","))
    if not corpora:
        parser.error(f"--corpus: choose from {', '.join(CORPORA)}")
    bench = Bench(work, args.reps, corpora)
    try:
        for section in SECTIONS:
            if section in only:
                getattr(bench, section)()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rows = sorted(bench.rows, key=lambda r: r["section"])
    total = time.perf_counter() - started
    info = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps({"machine": info, "reps": args.reps, "total_s": total, "rows": rows,
                                                       "raw": bench.raw, "measured": MEASURED}, indent=2, default=str))
    disturbed = [m for m in MEASURED if m["foreign_cores"] > QUIET_CORES]
    load = (f"other processes: {len(disturbed)} of {len(MEASURED)} measured processes ran while other processes used more than "
            f"{QUIET_CORES} cores (max {max((m['foreign_cores'] for m in MEASURED), default=0):.2f} cores)"
            + (": those numbers are noisier, rerun on a quiet machine" if disturbed else "")
            + f"; waited {_waited[0]:.0f} s for the machine to calm down")
    text = (f"{table(rows)}\n\ndevice: {info['device']}; machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; Python {info['python']}, "
            f"torch {info['torch']}, transformers {info['transformers']}, datasets {info['datasets']}; "
            f"ml-exp {info['ml_exp_commit']}; torch threads per process: {THREADS}; {args.reps} repetitions (median); "
            f"total {total / 60:.1f} min\n{load}\n")
    (RESULTS / "results.md").write_text(text)
    print(text)
    print(f"(also in {RESULTS.relative_to(ROOT)}/results.md and results.json)")


if __name__ == "__main__":
    main()
