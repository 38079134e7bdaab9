"""The code a step runs, as recorded in the manifest: the repository's commit and dirty flag, and
a SHA-256 of every Python file of the experiment, so that a run is not continued with other code
than it ran (its module, or any helper module it imports, such as the demo's ``demo_documents.py``)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

# Folders that are not the experiment's code: tests, virtual environments, caches, local stores
# (``.exp-store``) and everything hidden.
SKIPPED_FOLDERS = frozenset({"tests", "__pycache__", "node_modules", "site-packages", "build", "dist"})
# Past this many files the per-file digests are left out of the record (the overall one stays).
LISTED_FILES = 200


def git_state(directory: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the experiment's repository (None when it is not one)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        branch, dirty = None, None
    return {"commit": commit, "branch": branch, "dirty": dirty}


def _skipped(relative: Path) -> bool:
    return any(part.startswith(".") or part in SKIPPED_FOLDERS for part in relative.parts[:-1])


def python_sources(directory: Path) -> list[Path]:
    """The experiment's Python files, relative to it, sorted: what git tracks or would track
    (ignored files are not code), else every ``.py`` file under it; never tests, hidden folders or
    virtual environments."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(directory), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "*.py"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split("\0")
        found = {Path(p) for p in listed if p}
    except (OSError, subprocess.SubprocessError):
        found = set()
        for root, folders, files in os.walk(directory):
            here = Path(root)
            folders[:] = [
                f
                for f in folders
                if not f.startswith(".") and f not in SKIPPED_FOLDERS and not (here / f / "pyvenv.cfg").exists()
            ]
            found.update((here / f).relative_to(directory) for f in files if f.endswith(".py"))
    return sorted(p for p in found if not _skipped(p) and (directory / p).is_file())


def code_state(directory: Path, module: str) -> dict[str, Any]:
    """The record of the code a step runs: commit, dirty flag, the SHA-256 of ``UDF_MODULE``'s file
    and one over every Python file of the experiment (paths and contents), with each file's."""
    base = directory.joinpath(*module.split("."))
    source = next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)
    digest = hashlib.sha256(source.read_bytes()).hexdigest() if source is not None else None
    files = {p.as_posix(): hashlib.sha256((directory / p).read_bytes()).hexdigest() for p in python_sources(directory)}
    overall = hashlib.sha256("".join(f"{path}\0{sha}\n" for path, sha in files.items()).encode()).hexdigest()
    git = git_state(directory) or {}
    record: dict[str, Any] = {
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "module": module,
        "module_sha256": digest,
        "sources_sha256": overall,
    }
    if len(files) <= LISTED_FILES:
        record["sources"] = {path: sha[:16] for path, sha in files.items()}
    return record


def code_differs(recorded: Any, now: dict[str, Any]) -> bool:
    """Whether ``now`` is other code than ``recorded`` (runs recorded before every file was hashed
    compare their module only)."""
    if not isinstance(recorded, dict):
        return False
    key = "sources_sha256" if recorded.get("sources_sha256") else "module_sha256"
    return recorded.get(key) not in (None, now.get(key))


def changed_files(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The files that differ between two records, each with what happened to it ("x.py changed",
    "y.py added", "z.py removed"); empty when a record does not list its files."""
    was, is_ = recorded.get("sources"), now.get("sources")
    if not isinstance(was, dict) or not isinstance(is_, dict):
        return []
    changed = [f"{p} changed" for p in sorted(set(was) & set(is_)) if was[p] != is_[p]]
    added = [f"{p} added" for p in sorted(set(is_) - set(was))]
    return changed + added + [f"{p} removed" for p in sorted(set(was) - set(is_))]
