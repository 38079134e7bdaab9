"""ml_exp.storage.store against file:// and a loopback SeaweedFS S3 (the ``storage_uri`` fixture)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from ml_exp.storage.store import (
    OutputExistsError,
    RunExistsError,
    StepAlreadyCompleted,
    Store,
    StoreError,
)
from ml_exp.storage.transport_s3 import S3Transport
from tests.s3server import free_ports

EXP = "EXP-1-store"
N_PARALLEL = 8


def make_store(uri: str) -> Store:
    return Store(uri, EXP)


# -- run numbers -------------------------------------------------------------------

def test_auto_claim_numbers_runs_1_2_3(storage_uri):
    store = make_store(storage_uri)
    assert store.run_numbers() == []
    runs = [store.claim_run(None, {"settings": {"SEED": 42}}) for _ in range(3)]
    assert [r.num for r in runs] == [1, 2, 3]
    assert store.run_numbers() == [1, 2, 3]
    assert [r.num for r in store.runs()] == [1, 2, 3]
    assert runs[1].uri == f"{store.root}/run_2"
    m = runs[2].read_manifest()
    assert m["settings"] == {"SEED": 42}
    assert m["run"] == 3 and m["experiment"] == EXP


def test_manifest_may_be_built_from_the_run_number(storage_uri):
    store = make_store(storage_uri)
    store.claim_run(None, {})
    run = store.claim_run(None, lambda num: {"title": f"run {num}", "steps": {"training": {"status": "pending"}}})
    assert run.read_manifest()["title"] == "run 2"
    assert run.begin_step("training")["attempt"] == 1


def test_explicit_run_number_taken_raises(storage_uri):
    store = make_store(storage_uri)
    run = store.claim_run(5, {"who": "first"})
    assert run.num == 5 and store.run_exists(5) and not store.run_exists(4)
    with pytest.raises(RunExistsError, match="run_5 already exists"):
        store.claim_run(5, {"who": "second"})
    assert store.open_run(5).read_manifest()["who"] == "first"  # never overwritten
    assert store.claim_run(None, {}).num == 6
    with pytest.raises(StoreError, match="run_7 does not exist"):
        store.open_run(7)


def _claim_in_subprocess(uri: str, worker: int, barrier) -> tuple[int, int]:
    store = make_store(uri)
    store.run_numbers()  # warm up (imports, S3 session), then all claim at once
    barrier.wait(timeout=60)
    run = store.claim_run(None, {"worker": worker})
    return worker, run.num


def test_parallel_claims_are_distinct_and_contiguous(storage_uri):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(N_PARALLEL, mp_context=ctx) as pool:
        barrier = manager.Barrier(N_PARALLEL)
        futures = [pool.submit(_claim_in_subprocess, storage_uri, w, barrier) for w in range(N_PARALLEL)]
        results = [f.result(timeout=120) for f in futures]
    nums = sorted(n for _, n in results)
    assert nums == list(range(1, N_PARALLEL + 1))
    store = make_store(storage_uri)
    assert store.run_numbers() == nums
    for worker, num in results:  # each manifest belongs to the worker that claimed it
        assert store.open_run(num).read_manifest()["worker"] == worker


# -- manifest and files ------------------------------------------------------------

def test_manifest_write_update_round_trip(storage_uri):
    run = make_store(storage_uri).claim_run(None, {"a": 1})
    m = run.read_manifest()
    m["b"] = [1, 2]
    run.write_manifest(m)
    assert run.read_manifest()["b"] == [1, 2]

    def in_place(d):
        d["a"] += 10

    assert run.update_manifest(in_place)["a"] == 11
    assert run.update_manifest(lambda d: {**d, "c": "new"})["c"] == "new"
    again = make_store(storage_uri).open_run(run.num).read_manifest()
    assert (again["a"], again["b"], again["c"]) == (11, [1, 2], "new")


def test_concurrent_manifest_updates_lose_nothing(storage_uri):
    num = make_store(storage_uri).claim_run(None, {"hits": []}).num

    def add(i):
        make_store(storage_uri).open_run(num).update_manifest(lambda d: d["hits"].append(i))

    with ThreadPoolExecutor(6) as ex:
        list(ex.map(add, range(6)))
    assert sorted(make_store(storage_uri).open_run(num).read_manifest()["hits"]) == list(range(6))


def test_write_bytes_refuses_overwrite(storage_uri):
    run = make_store(storage_uri).claim_run(None, {})
    url = run.write_bytes("inference/m/preds.bin", b"\x00first")
    assert url == run.path("inference", "m", "preds.bin")
    with pytest.raises(OutputExistsError, match="refusing to overwrite") as ei:
        run.write_bytes("inference/m/preds.bin", b"second")
    assert isinstance(ei.value, StoreError) and isinstance(ei.value, FileExistsError)
    assert run.read_bytes("inference/m/preds.bin") == b"\x00first"
    run.write_bytes("inference/m/preds.bin", b"third", overwrite=True)
    assert run.read_bytes("inference/m/preds.bin") == b"third"

    run.write_text("report.md", "# Report\n")
    run.write_json("comparison.json", {"m": {"f1_macro": 0.5}})
    assert run.read_text("report.md") == "# Report\n"
    assert run.read_json("comparison.json") == {"m": {"f1_macro": 0.5}}
    assert run.exists("report.md") and not run.exists("nope.md")
    assert run.listdir() == ["comparison.json", "inference", "manifest.json", "report.md"]
    assert run.listdir("inference/m") == ["preds.bin"]
    assert run.listdir("missing") == []
    with pytest.raises(StoreError, match="does not exist|not found"):
        run.read_bytes("nope.md")
    with pytest.raises(StoreError):
        run.path("..", "other")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_put_dir_get_dir_round_trip_and_completion(storage_uri, tmp_path):
    run = make_store(storage_uri).claim_run(None, {})
    src = tmp_path / "saved"
    (src / "tokenizer").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(70_000))
    (src / "config.json").write_text(json.dumps({"num_labels": 3}))
    (src / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\n")

    # a half-written folder (e.g. an interrupted upload) is not complete and cannot be read
    run.write_bytes("models/m/stale.bin", b"partial")
    assert run.exists("models/m") and not run.is_complete("models/m")
    with pytest.raises(StoreError, match="incomplete"):
        run.get_dir("models/m", str(tmp_path / "nope"))

    url = run.put_dir(str(src), "models/m")
    assert url == run.path("models/m") and run.is_complete("models/m")
    out = tmp_path / "downloaded"
    run.get_dir("models/m", str(out))
    assert _tree(out) == _tree(src)  # stale file gone, marker not copied

    with pytest.raises(OutputExistsError):
        run.put_dir(str(src), "models/m")
    (src / "config.json").write_text("{}")
    (src / "tokenizer" / "vocab.txt").unlink()
    run.put_dir(str(src), "models/m", overwrite=True)
    out2 = tmp_path / "downloaded2"
    run.get_dir("models/m", str(out2))
    assert _tree(out2) == _tree(src)
    assert not any(n.startswith(".") for n in run.listdir("models"))  # no temporaries left


def test_put_dir_move_gives_the_folder_up_and_keeps_the_guarantees(storage_uri, tmp_path):
    run = make_store(storage_uri).claim_run(None, {})
    src = tmp_path / "scratch" / "prepared"
    (src / "train").mkdir(parents=True)
    (src / "train" / "data-00000.arrow").write_bytes(os.urandom(50_000))
    (src / "labels.json").write_text('["a", "b"]')
    (src / "_COMPLETE").write_text("a stale marker is never the one published")
    before = _tree(src)
    expected = {k: v for k, v in before.items() if k != "_COMPLETE"}
    inode = (src / "train" / "data-00000.arrow").stat().st_ino

    run.put_dir(str(src), "data/prepared/m", move=True)
    assert run.is_complete("data/prepared/m")
    out = tmp_path / "downloaded"
    run.get_dir("data/prepared/m", str(out))
    assert _tree(out) == expected
    local = run.local_dir("data/prepared/m")
    if local is not None:  # local storage, same file system: renamed, not copied
        assert (local / "train" / "data-00000.arrow").stat().st_ino == inode
        assert src.is_dir() and not any(src.iterdir())
        assert json.loads((local / "_COMPLETE").read_text())["files"] == 2
    else:  # S3: uploaded, the folder left as it was for its owner to remove
        assert _tree(src) == before
    with pytest.raises(OutputExistsError):  # a complete folder is still never replaced unasked
        run.put_dir(str(out), "data/prepared/m", move=True)
    assert _tree(out) == expected  # ... and the refused folder is left as it was
    assert not any(n.startswith(".") for n in run.listdir("data/prepared"))


def test_interrupted_put_dir_is_never_complete(storage_uri, tmp_path):
    run = make_store(storage_uri).claim_run(None, {})
    src = tmp_path / "saved"
    src.mkdir()
    for i in range(5):
        (src / f"shard-{i}.bin").write_bytes(os.urandom(1000))
    (src / "zz-broken").symlink_to(tmp_path / "missing")  # the upload fails on this one
    with pytest.raises(StoreError):
        run.put_dir(str(src), "checkpoints/m")
    assert not run.is_complete("checkpoints/m")
    with pytest.raises(StoreError, match="incomplete"):
        run.get_dir("checkpoints/m", str(tmp_path / "out"))
    (src / "zz-broken").unlink()
    run.put_dir(str(src), "checkpoints/m")  # a retry replaces the leftovers without overwrite=True
    run.get_dir("checkpoints/m", str(tmp_path / "out"))
    assert _tree(tmp_path / "out") == _tree(src)


@pytest.mark.s3
def test_s3_objects_without_marker_are_not_complete(s3_env, tmp_path, monkeypatch):
    run = make_store(f"s3://{s3_env.bucket}/partial").claim_run(None, {})
    src = tmp_path / "saved"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"w" * 1000)
    real_put = S3Transport.put

    def crash_before_marker(self, url, *args, **kwargs):
        if url.endswith("/_COMPLETE"):
            raise ConnectionResetError("simulated crash")
        return real_put(self, url, *args, **kwargs)

    monkeypatch.setattr(S3Transport, "put", crash_before_marker)
    with pytest.raises(StoreError):
        run.put_dir(str(src), "models/m")
    monkeypatch.setattr(S3Transport, "put", real_put)
    assert run.listdir("models/m") == ["weights.bin"] and not run.is_complete("models/m")
    with pytest.raises(StoreError, match="incomplete"):
        run.get_dir("models/m", str(tmp_path / "out"))


def test_steps_status_and_completed_step_is_never_rerun(storage_uri):
    run = make_store(storage_uri).claim_run(None, {})
    rec = run.begin_step("training")
    assert rec["status"] == "running" and rec["started_at"]
    time.sleep(0.02)
    rec = run.complete_step("training", best_metric=0.9)
    assert rec["status"] == "completed" and rec["best_metric"] == 0.9
    assert rec["duration_s"] >= 0.02 and rec["ended_at"] >= rec["started_at"]
    with pytest.raises(StepAlreadyCompleted, match="training"):
        run.begin_step("training")
    with pytest.raises(StepAlreadyCompleted):
        run.fail_step("training", "boom")
    assert run.read_manifest()["steps"]["training"]["status"] == "completed"

    run.begin_step("inference")
    assert run.fail_step("inference", "CUDA OOM")["error"] == "CUDA OOM"
    again = run.begin_step("inference")  # a failed step may be retried
    assert again["status"] == "running" and again["attempt"] == 2


def test_check_access_ok_and_leaves_nothing(storage_uri):
    store = make_store(storage_uri)
    store.check_access()
    assert store.run_numbers() == []
    if store.transport.is_remote:
        assert [name for name in store.transport.listdir(store.root) if "probe" in name] == []
    else:  # not even the folders the probe needed
        assert not os.path.exists(store.transport.local_path(store.storage_uri))


# -- user errors -------------------------------------------------------------------

@pytest.mark.parametrize("uri,name,match", [
    ("", EXP, "STORAGE_URI is empty"),
    ("gs://bucket/x", EXP, "only file:// and s3://"),
    ("s3://", EXP, "names no bucket"),
    ("file:///tmp/x", "a/b", "EXPERIMENT_NAME"),
])
def test_invalid_configuration(uri, name, match):
    with pytest.raises(StoreError, match=match):
        Store(uri, name)


def test_file_storage_not_writable(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StoreError, match="STORAGE_URI="):
        Store(f"file://{tmp_path}/a-file", EXP).check_access()


def _assert_clean(err: StoreError) -> str:
    msg = str(err)
    for raw in ("botocore", "Traceback", "ClientError", "aiohttp"):
        assert raw not in msg
    assert err.__cause__ is None and err.__suppress_context__
    return msg


@pytest.mark.s3
def test_check_access_missing_bucket(s3_env):
    store = Store("s3://no-such-bucket-mlexp/prefix", EXP)
    with pytest.raises(StoreError) as ei:
        store.check_access()
    msg = _assert_clean(ei.value)
    assert "no-such-bucket-mlexp" in msg and "does not exist" in msg
    with pytest.raises(StoreError, match="no-such-bucket-mlexp"):
        store.claim_run(None, {})


@pytest.mark.s3
@pytest.mark.parametrize("var,expect", [
    ("AWS_ACCESS_KEY_ID", "access key ID"),
    ("AWS_SECRET_ACCESS_KEY", "secret access key"),
])
def test_check_access_wrong_credentials(s3_env, monkeypatch, var, expect):
    monkeypatch.setenv(var, "wrong-" + var.lower())
    with pytest.raises(StoreError) as ei:
        Store(f"s3://{s3_env.bucket}/x", EXP).check_access()
    msg = _assert_clean(ei.value)
    assert expect in msg and var in msg and "environment" in msg


@pytest.mark.s3
def test_check_access_unreachable_endpoint_fails_fast(s3_env, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    t0 = time.monotonic()
    with pytest.raises(StoreError) as ei:
        Store(f"s3://{s3_env.bucket}/x", EXP).check_access()
    assert time.monotonic() - t0 < 10
    msg = _assert_clean(ei.value)
    assert "cannot reach" in msg and endpoint in msg


@pytest.mark.s3
def test_storage_options_override_environment(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    opts = {"key": s3_env.access_key, "secret": s3_env.secret_key}
    Store(f"s3://{s3_env.bucket}/opts", EXP, storage_options=opts).check_access()


def test_import_is_light():
    """The store is imported by `exp runs` and validation: no storage or ML library until used
    (its import time is measured in the bench, not asserted here)."""
    code = ("import sys; import ml_exp.storage.store; "
            "print(sorted(m for m in ('fsspec', 's3fs', 'botocore', 'torch', 'transformers', 'sagemaker') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
