"""The transport contract (ml_exp.storage.transport), kept the same by file:// and s3:// (the
``storage_uri`` fixture runs each test against both), and what a run offers on top of it."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from ml_exp.storage.errors import DamagedRun, OutputExistsError, StoreError
from ml_exp.storage.store import Store, transport_for
from ml_exp.storage.transport_file import FileTransport
from ml_exp.storage.transport_s3 import S3Transport

EXP = "EXP-1-transport"


def test_the_contract_on_either_storage(storage_uri, tmp_path):
    store = Store(storage_uri, EXP)
    t, folder = store.transport, f"{store.root}/x"
    assert (t.local_path(folder) is None) == t.is_remote
    t.put(f"{folder}/a.json", b'{"n": 1}')
    with pytest.raises(OutputExistsError, match="refusing to overwrite"):
        t.put(f"{folder}/a.json", b"again")
    t.put(f"{folder}/sub/b.bin", b"\x00b")
    assert t.read(f"{folder}/a.json") == b'{"n": 1}'
    with t.open(f"{folder}/sub/b.bin") as f:
        assert f.read() == b"\x00b"
    assert t.exists(f"{folder}/a.json") and not t.exists(f"{folder}/nope")
    assert t.existing([f"{folder}/a.json", f"{folder}/nope", f"{folder}/sub/b.bin"]) == {
        f"{folder}/a.json", f"{folder}/sub/b.bin"}
    assert t.existing([]) == set()
    assert t.listdir(folder) == ["a.json", "sub"] and t.listdir(f"{folder}/missing") == []
    assert t.files(folder) == ["a.json", "sub/b.bin"] and t.files(f"{folder}/missing") == []

    assert t.update_json(f"{folder}/a.json", lambda d: d.update(n=d["n"] + 1)) == {"n": 2}
    assert t.update_json(f"{folder}/a.json", lambda d: {"m": d["n"]}) == {"m": 2}
    assert t.read(f"{folder}/a.json") == b'{\n  "m": 2\n}\n'

    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "deep" / "w.bin").write_bytes(b"w")
    t.put_dir(str(src), f"{folder}/dir", b"{}")
    assert t.files(f"{folder}/dir") == ["_COMPLETE", "deep/w.bin"]
    t.get_dir(f"{folder}/dir", str(tmp_path / "out"))
    out = tmp_path / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["deep", "deep/w.bin"]

    t.delete(f"{folder}/sub/b.bin")
    assert not t.exists(f"{folder}/sub/b.bin")
    with pytest.raises(StoreError, match=r"STORAGE_URI=.*does not exist|STORAGE_URI=.*not found"):
        t.read(f"{folder}/sub/b.bin")


def test_transport_for_picks_by_scheme(tmp_path):
    assert isinstance(transport_for(f"file://{tmp_path}"), FileTransport)
    plain = transport_for(str(tmp_path / "rel" / ".."))
    assert isinstance(plain, FileTransport) and plain.storage_uri == f"file://{tmp_path}"
    s3 = transport_for("s3://bucket/prefix/", {"anon": True})
    assert isinstance(s3, S3Transport) and s3.is_remote
    assert (s3.storage_uri, s3.bucket) == ("s3://bucket/prefix", "bucket")
    assert s3.local_path("s3://bucket/prefix/x") is None


def test_store_for_config(tmp_path):
    store = Store.for_config(SimpleNamespace(storage_uri=f"file://{tmp_path}", experiment_name=EXP))
    assert store.root == f"file://{tmp_path}/{EXP}" and store.experiment_name == EXP


def test_run_local_dir_open_and_damaged_manifest(storage_uri):
    run = Store(storage_uri, EXP).claim_run(None, {})
    assert run.experiment_name == EXP and run.is_remote == storage_uri.startswith("s3://")
    run.write_bytes("inference/m/p.bin", b"pp")
    local = run.local_dir("inference/m")
    if run.is_remote:
        assert local is None
    else:
        assert isinstance(local, Path) and (local / "p.bin").read_bytes() == b"pp"
    with run.open("inference/m/p.bin") as f:
        assert f.read() == b"pp"
    with pytest.raises(ValueError, match="reads only"):
        run.open("inference/m/p.bin", "wb")
    # a damaged manifest is refused alike on both storages, by a read and by an update
    run.write_bytes("manifest.json", b'{"run": 1', overwrite=True)
    with pytest.raises(DamagedRun, match="is damaged: not valid JSON"):
        run.read_manifest()
    with pytest.raises(DamagedRun, match="is damaged: not valid JSON"):
        run.begin_step("training")
    assert run.read_bytes("manifest.json") == b'{"run": 1'


def test_scratch_area_is_local(storage_uri):
    run = Store(storage_uri, EXP).claim_run(None, {})
    area = run.scratch_area()
    assert os.path.isdir(area)
    if not run.is_remote:
        assert area == str(run.local_dir(".scratch"))
    run.clear_scratch()
