"""The run another run reuses the data of (``DATA_FROM``): ``EXPERIMENT/run_N`` in this
experiment's STORAGE_URI, or the full ``file://`` / ``s3://`` URI of a run folder."""

from __future__ import annotations

from ml_exp.storage.errors import StoreError
from ml_exp.storage.layout import RUN_DIR_RE
from ml_exp.storage.run import Run
from ml_exp.storage.store import Store


def parse_data_from(data_from: str, storage_uri: str) -> tuple[str, str, int]:
    """(storage URI, experiment, run number) of ``data_from``."""
    head, _, run_folder = data_from.rstrip("/").rpartition("/")
    prefix, _, experiment = head.rpartition("/")
    match = RUN_DIR_RE.match(run_folder)
    if not match or not experiment:
        raise StoreError(f"DATA_FROM={data_from!r}: name a run as EXPERIMENT/run_N (e.g. EXP-3333-longformer/run_4).")
    return (prefix if "://" in data_from else storage_uri), experiment, int(match.group(1))


def source_run(data_from: str, storage_uri: str) -> Run:
    """The run ``data_from`` names; StoreError (saying which runs exist) when there is none."""
    uri, experiment, num = parse_data_from(data_from, storage_uri)
    store = Store(uri, experiment)
    if not store.run_exists(num):
        existing = ", ".join(f"run_{n}" for n in store.run_numbers())
        raise StoreError(
            f"DATA_FROM={data_from!r}: there is no run_{num} in {store.root} "
            f"({'its runs: ' + existing if existing else 'no run of that experiment there'}); "
            "name a completed run of another experiment."
        )
    return store.open_run(num)


def checked_source(data_from: str, storage_uri: str) -> tuple[Run, dict]:
    """The run ``data_from`` names and its manifest, once it is complete through preparation
    (its reconciled records and the split it made are what a run reuses); StoreError otherwise."""
    from ml_exp.core.names import PREPARATION, RECONCILIATION
    from ml_exp.storage.layout import RECONCILED, SPLIT

    run = source_run(data_from, storage_uri)
    manifest = run.read_manifest()
    steps = manifest.get("steps") or {}
    for step in (RECONCILIATION, PREPARATION):
        status = (steps.get(step) or {}).get("status", "not run")
        if status != "completed":
            raise StoreError(
                f"DATA_FROM={data_from!r}: its {step} step is {status}, and a run reuses the reconciled records "
                f"and the split of a run whose {RECONCILIATION} and {PREPARATION} completed; finish it "
                f"(exp run --run {run.num}) or name another run."
            )
    if not run.is_complete(RECONCILED) or run.missing_files(RECONCILED) or not run.exists(SPLIT):
        raise StoreError(
            f"DATA_FROM={data_from!r}: {run.uri} lacks its complete {RECONCILED}/ or {SPLIT} (a run prepared "
            "before ml-exp recorded its split has none); name a run prepared by this version, or re-run that one."
        )
    return run, manifest
