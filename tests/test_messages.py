"""Messages that say what happened, and only that."""

from __future__ import annotations

from ml_exp.pipeline.runner import StepFailed


class FakeRun:
    num = 3


def test_a_step_whose_manifest_could_not_be_updated_is_not_said_to_be_marked_failed():
    note = "the manifest could not be updated (read-only file system), so it still shows training as running"
    stuck = StepFailed(FakeRun(), "training", "OSError: read-only", note=note)
    assert not any("is marked failed" in line for line in stuck.advice)
    assert any("could not be marked failed" in line for line in stuck.advice) and f"Also: {note}" in stuck.advice
    marked = StepFailed(FakeRun(), "training", "OSError: read-only")
    assert any("training is marked failed" in line for line in marked.advice)
