"""Issue 14, "the run record tells the truth": resuming with the run's own settings, one writer per
run (a lease), and bad inputs refused naming the key, record or function, without a traceback.

The real `exp` console script on baked experiments (the torch-free experiment of test_steps.py),
real concurrent processes, real files; training cases are in test_run_record_training.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_exp.config import load_config
from ml_exp.core.errors import ProblemsFound
from ml_exp.storage.lease import take_lease
from ml_exp.pipeline.runner import StepFailed, run_pipeline
from ml_exp.storage.store import Store
from tests.bake import bake
from tests.test_steps import write_experiment

EXP = str(Path(sys.executable).with_name("exp"))
RECONCILE = ("run", "--steps", "reconciliation")


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    project = bake(tmp_path, ticket="EXP-14", model_slug="record", example="blank")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("MODEL_NAMES", "plain")
    write_experiment(project)
    return project


def exp(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([EXP, *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=180)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run_path(project: Path, num: int = 1) -> Path:
    return project / ".exp-store" / project.name / f"run_{num}"


def manifest(project: Path, num: int = 1) -> dict:
    return json.loads((run_path(project, num) / "manifest.json").read_text())


def set_setting(project: Path, key: str, value: str) -> None:
    settings = project / "settings.ini"
    lines = settings.read_text().splitlines()
    assert any(line.startswith(f"{key} =") for line in lines), key
    settings.write_text("\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line for line in lines) + "\n")


# --- 1. resuming uses the run's own settings -----------------------------------------------------


def test_resume_refuses_changed_settings_naming_them_and_writes_nothing(project):
    first = exp(*RECONCILE, cwd=project, env={"NUM_TRAIN_EPOCHS": "10", "LEARNING_RATE": "2e-3"})
    assert first.returncode == 0, first.stderr
    before = (run_path(project) / "manifest.json").read_bytes()
    resumed = exp("run", "--run", "1", "--steps", "reconciliation,preparation", cwd=project, env={"NUM_TRAIN_EPOCHS": "1", "LEARNING_RATE": "1e-6"})
    assert resumed.returncode == 1
    assert "run_1 was started with other settings: 2 differ (nothing was run or written)" in resumed.stderr
    assert "NUM_TRAIN_EPOCHS: is '1' now but was '10' when run_1 started" in resumed.stderr
    assert "LEARNING_RATE: is '1e-6' now but was '2e-3' when run_1 started" in resumed.stderr
    assert "--accept-changed-settings" in resumed.stderr
    assert (run_path(project) / "manifest.json").read_bytes() == before


def test_resume_ignores_step_switches_and_equal_values_and_records_accepted_changes(project):
    assert exp(*RECONCILE, cwd=project, env={"NUM_TRAIN_EPOCHS": "3"}).returncode == 0
    # RUN_* choose what runs now; "3.0" epochs are 3 epochs: neither blocks a resume
    same = exp("run", "--run", "1", "--steps", "reconciliation", cwd=project, env={"NUM_TRAIN_EPOCHS": "3.0", "RUN_INFERENCE": "false"})
    assert same.returncode == 0, same.stderr
    accepted = exp("run", "--run", "1", "--steps", "preparation", "--accept-changed-settings", cwd=project, env={"SEED": "7"})
    assert accepted.returncode == 0, accepted.stderr
    assert "SEED: '42' when run_1 started, '7' now: accepted" in accepted.stdout
    record = manifest(project)
    assert record["settings"]["SEED"] == "42"  # the snapshot of the start stays as it was
    assert record["steps"]["preparation"]["settings_changed"] == {"SEED": {"recorded": "42", "now": "7"}}
    assert "settings_changed" not in record["steps"]["reconciliation"]


def test_a_smoke_run_continues_as_a_smoke_run(project):
    """Its smoke settings are recorded, not in settings.ini: continuing without --smoke is no change."""
    assert exp("run", "--smoke", "--steps", "reconciliation", cwd=project).returncode == 0
    assert manifest(project)["settings"]["NUM_TRAIN_EPOCHS"] == "1"
    resumed = exp("run", "--run", "1", "--steps", "preparation", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert "settings_changed" not in manifest(project)["steps"]["preparation"]
    changed = exp("run", "--run", "1", "--steps", "preparation", cwd=project, env={"SEED": "7"})
    assert changed.returncode == 1 and "SEED: is '7' now but was '42'" in changed.stderr


def test_smoke_on_a_full_run_is_refused(project):
    assert exp(*RECONCILE, cwd=project).returncode == 0
    smoke = exp("run", "--run", "1", "--smoke", "--steps", "preparation", cwd=project)
    assert smoke.returncode == 1 and "--smoke: run_1 is not a smoke run" in smoke.stderr
    assert manifest(project)["steps"]["preparation"] == {"status": "pending"}


# --- 3. one writer per run -----------------------------------------------------------------------

SLOW_RECONCILE = {"yield from records()": "import time\n    for record in records():\n        time.sleep(0.5)\n        yield record"}


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def test_second_exp_run_on_a_live_run_is_refused_at_once_naming_the_holder(project):
    write_experiment(project, SLOW_RECONCILE)  # 30 records: 15 s
    first = subprocess.Popen([EXP, *RECONCILE], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run_path(project) / "manifest.json").exists() and "lease" in manifest(project), "lease")
        started = time.monotonic()
        second = exp("run", "--run", "1", "--steps", "reconciliation", cwd=project)
        assert time.monotonic() - started < 10  # at once, not after the first one's work
        assert second.returncode == 1
        assert f"run_1 is being run by pid {first.pid} on host {socket.gethostname()} (since " in second.stderr
        assert manifest(project)["steps"]["reconciliation"]["attempt"] == 1  # the second one began nothing
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    record = manifest(project)
    assert "lease" not in record and record["steps"]["reconciliation"]["status"] == "completed"


def test_lease_of_a_killed_run_is_taken_over_and_recorded(project):
    write_experiment(project, SLOW_RECONCILE)
    killed = subprocess.Popen([EXP, *RECONCILE], cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (run_path(project) / "manifest.json").exists() and manifest(project)["steps"]["reconciliation"]["status"] == "running", "running step")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert manifest(project)["lease"]["pid"] == killed.pid  # nobody released it
    write_experiment(project)  # other code than the killed attempt ran: accepted, as a user would
    resumed = exp("run", "--run", "1", "--steps", "reconciliation", "--accept-changed-code", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    record = manifest(project)
    [takeover] = record["lease_takeovers"]
    assert takeover["from"]["pid"] == killed.pid and takeover["reason"] == f"pid {killed.pid} no longer runs on {socket.gethostname()}"
    assert record["steps"]["reconciliation"]["status"] == "completed" and "lease" not in record


def test_lease_of_another_host_is_refused_while_renewed_and_taken_over_when_stale(project):
    assert exp(*RECONCILE, cwd=project).returncode == 0
    path = run_path(project) / "manifest.json"
    record = manifest(project)
    fresh = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    record["lease"] = {"token": "x", "host": "gpu-box-7", "pid": 4242, "since": "2026-01-01T00:00:00+00:00", "renewed_at": fresh}
    path.write_text(json.dumps(record))
    refused = exp("run", "--run", "1", "--steps", "preparation", cwd=project)
    assert refused.returncode == 1 and "run_1 is being run by pid 4242 on host gpu-box-7" in refused.stderr
    record["lease"]["renewed_at"] = "2026-01-01T00:00:00+00:00"
    path.write_text(json.dumps(record))
    taken = exp("run", "--run", "1", "--steps", "preparation", cwd=project)
    assert taken.returncode == 0, taken.stderr
    [takeover] = manifest(project)["lease_takeovers"]
    assert takeover["from"]["host"] == "gpu-box-7" and takeover["reason"].startswith("not renewed for ")


def test_lease_is_renewed_while_held_and_released(project):
    assert exp(*RECONCILE, cwd=project).returncode == 0
    run = Store((project / ".exp-store").as_uri(), project.name).open_run(1)
    with take_lease(run, renew_every_s=0.05) as lease:
        since = run.read_manifest()["lease"]["since"]
        time.sleep(0.5)
        held = run.read_manifest()["lease"]
        assert held["token"] == lease.token and held["renewed_at"] > since
    assert "lease" not in run.read_manifest()


# --- 4. model names with one folder --------------------------------------------------------------


@pytest.mark.parametrize("names", ["org/tiny,org--tiny", "modèle,mod-le"])
def test_model_names_with_one_folder_key_are_refused_naming_both(project, names):
    result = exp("validate", cwd=project, env={"MODEL_NAMES": names})
    first, second = names.split(",")
    assert result.returncode == 1
    assert f"MODEL_NAMES: {first!r} and {second!r} both map to the folder name" in result.stderr
    assert not (project / ".exp-store").exists()


# --- 5. literal text, byte-order mark ------------------------------------------------------------


def test_markup_in_settings_and_records_is_printed_literally(project):
    name = exp("validate", cwd=project, env={"EXPERIMENT_NAME": "[/x]"})
    assert name.returncode == 1 and "EXPERIMENT_NAME: '[/x]' is not a name" in name.stderr
    write_experiment(project, {'f"doc-{index}"': '"[/]"'})
    record = exp(*RECONCILE, cwd=project)
    assert record.returncode == 1 and "record #2 (id='[/]') repeats an id" in record.stderr


def test_missing_section_shows_its_name_and_a_byte_order_mark_is_accepted(project):
    settings = project / "settings.ini"
    text = settings.read_text()
    settings.write_text(text.replace("[settings]", ""))
    missing = exp("validate", cwd=project)
    assert missing.returncode == 1 and "has no [settings] section" in missing.stderr
    settings.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert exp("validate", cwd=project).returncode == 0


# --- 6. a damaged manifest -----------------------------------------------------------------------


def test_truncated_manifest_is_listed_as_damaged_and_refused_without_hiding_other_runs(project):
    for _ in range(2):
        assert exp(*RECONCILE, cwd=project).returncode == 0
    path = run_path(project, 1) / "manifest.json"
    path.write_bytes(path.read_bytes()[:150])
    damaged = path.read_bytes()
    listed = exp("runs", "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    first, second = json.loads(listed.stdout)
    assert first["status"] == "damaged" and "not valid JSON" in first["problem"]
    assert second["status"] == "partial"  # only reconciliation ran
    table = exp("runs", cwd=project, env={"COLUMNS": "300"})
    assert table.returncode == 0 and "damaged" in table.stdout
    resumed = exp("run", "--run", "1", cwd=project)
    assert resumed.returncode == 1
    assert "run_1's manifest.json" in resumed.stderr and "is damaged: not valid JSON" in resumed.stderr and "exp run" in resumed.stderr
    assert path.read_bytes() == damaged


# --- 7. reconciliation refuses what it cannot store truthfully -----------------------------------

RECORD_CASES = [
    ({'"label": label}': '"label": float("nan") if index == 4 else label}'}, "record #5 (id='doc-4') has no 'label' (NaN, a missing value)"),
    ({'"label": label}': '"label": None if index == 2 else label}'}, "record #3 (id='doc-2') has no 'label'"),
    ({'f"doc-{index}"': '(7 if index == 0 else "7" if index == 1 else f"doc-{index}")'}, "record #2 (id='7') repeats an id already seen (ids are stored as text"),
    ({'"text": f"{label} words number {index}"': '"text": float("nan") if index == 3 else f"{label} words"'}, "record #4 (id='doc-3') has text=nan (a missing value)"),
    ({'"text": f"{label} words number {index}"': '"text": 12 if index == 3 else f"{label} words"'}, "record #4 (id='doc-3') has text=12 where text is expected"),
    ({'"text": f"{label} words number {index}"': '"text": None if index == 3 else f"{label} words"'}, "record #4 (id='doc-3') has text=None where text is expected"),
]


@pytest.mark.parametrize(("replace", "message"), RECORD_CASES, ids=["nan-label", "none-label", "7-and-'7'", "nan-text", "number-text", "none-text"])
def test_records_that_cannot_be_stored_truthfully_are_refused(project, replace, message):
    write_experiment(project, replace)
    with pytest.raises(StepFailed) as caught:
        run_pipeline(project, steps=["reconciliation"], announce=lambda _: None)
    assert message in caught.value.message
    assert manifest(project)["steps"]["reconciliation"]["status"] == "failed"
    assert not (run_path(project) / "data" / "reconciled").exists()


def test_nan_text_via_the_cli_has_no_traceback(project):
    write_experiment(project, RECORD_CASES[3][0])
    result = exp(*RECONCILE, cwd=project)
    assert result.returncode == 1 and "has text=nan" in result.stderr


# --- 8 / 11. a bug in a user function: its file and line; failure headers say what was done ------


def test_user_exception_shows_their_file_and_line_and_the_header_what_ran(project):
    write_experiment(project, {'    return {"vocabulary": {}}': '    vocabulary = {}\n    return vocabulary["missing"]'})
    source = (project / "experiment.py").read_text().splitlines()
    line = next(n for n, text in enumerate(source, 1) if 'vocabulary["missing"]' in text)
    result = exp("run", "--steps", "reconciliation,preparation", cwd=project)
    assert result.returncode == 1
    assert "run_1: preparation failed (completed before it: reconciliation):" in result.stderr
    assert "nothing was run or written" not in result.stderr
    assert f"load_processor('plain') raised KeyError: 'missing' (at experiment.py line {line}, in load_processor)" in result.stderr


# --- 10. an indented setting hidden in the value above it ----------------------------------------


def test_indented_setting_is_refused_with_its_line(project):
    settings = project / "settings.ini"
    lines = settings.read_text().splitlines()
    at = next(n for n, text in enumerate(lines) if text.startswith("KMS_KEY_ID ="))
    lines.insert(at + 1, "\tSEED = 7")
    settings.write_text("\n".join(lines) + "\n")
    with pytest.raises(ProblemsFound) as caught:
        load_config(project, environ={})
    assert [str(p) for p in caught.value.problems] == [
        f"SEED: line {at + 2} of settings.ini ('SEED = 7') is indented, so it is read as part of the value of KMS_KEY_ID above it; remove the indentation"
    ]
    # a TUNING_SPACE continues on indented lines by design (its terms are lower case)
    del lines[at + 1]
    space = next(n for n, text in enumerate(lines) if text.startswith("TUNING_SPACE ="))
    lines[space] = "TUNING_SPACE = learning_rate = uniform(1e-5, 1e-4)\n    num_train_epochs = int(2, 5)"
    settings.write_text("\n".join(lines) + "\n")
    assert load_config(project, environ={}).tuning_space == "learning_rate = uniform(1e-5, 1e-4)\nnum_train_epochs = int(2, 5)"


# --- 11. credentials in URLs, --run 999, scratch folders -----------------------------------------


def test_credentials_inside_urls_are_redacted_in_the_manifest(project):
    env = {"HF_ENDPOINT": "https://alice:s3cr3t-pass@hub.example.com/api", "WANDB_BASE_URL": "https://ghp_tok3n@wandb.example.com"}
    assert exp(*RECONCILE, cwd=project, env=env).returncode == 0
    text = (run_path(project) / "manifest.json").read_text()
    assert "s3cr3t-pass" not in text and "ghp_tok3n" not in text and "alice" not in text
    assert manifest(project)["environment"]["HF_ENDPOINT"] == "https://***redacted***@hub.example.com/api"


def test_continuing_a_missing_run_writes_nothing(project):
    result = exp("run", "--run", "999", cwd=project)
    assert result.returncode == 1 and "run_999 does not exist" in result.stderr
    assert not (project / ".exp-store").exists()


def test_scratch_of_a_killed_preparation_stays_in_the_run_and_goes_on_the_next_start(project, tmp_path):
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    write_experiment(project, {"    vocabulary = processor": "    import time; time.sleep(60)\n    vocabulary = processor"})
    killed = subprocess.Popen([EXP, "run", "--steps", "reconciliation,preparation"], cwd=project, env={**os.environ, "TMPDIR": str(system_temp)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scratch = run_path(project) / ".scratch"
    wait_for(lambda: list(scratch.glob("ml-exp-preparation-*")), "preparation scratch folder", timeout=90)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert list(scratch.glob("ml-exp-preparation-*"))  # left by the kill, inside the run
    assert not list(system_temp.glob("ml-exp-*")), list(system_temp.iterdir())
    write_experiment(project)
    resumed = exp("run", "--run", "1", "--steps", "reconciliation,preparation", "--accept-changed-code", cwd=project, env={"TMPDIR": str(system_temp)})
    assert resumed.returncode == 0, resumed.stderr
    assert list(scratch.iterdir()) == [] and not list(system_temp.glob("ml-exp-*"))


def test_a_damaged_checkpoint_is_skipped_naming_its_missing_files(tmp_path, caplog):
    from ml_exp.steps.trainer import last_complete_checkpoint

    for step, files in ((10, ("trainer_state.json", "optimizer.pt", "scheduler.pt", "model.safetensors")),
                        (20, ("trainer_state.json", "optimizer.pt", "scheduler.pt")),  # its weights deleted
                        (30, ("model.safetensors",))):  # killed while writing: no trainer_state.json yet
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("x")
    import logging

    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(tmp_path, logging.getLogger("test")) == str(tmp_path / "checkpoint-10")
    assert f"{tmp_path / 'checkpoint-20'} is damaged (model.safetensors missing)" in caplog.text
