"""Files a user names (``-o``, ``--output``): written atomically, never over their own input.

A reader (or the user, after a failure) sees the old file or the complete new one: the content
goes to a temporary file in the same folder, renamed over the target only once complete; on any
failure the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ml_exp.core.errors import UserError


def check_output(path: Path, where: str, inputs: Iterable[Path | str] = ()) -> None:
    """Refuse an output that is a folder or one of ``inputs`` (writing it would empty the input)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; name a file to write", where)
    for source in inputs:
        try:
            same = path.exists() and os.path.samefile(path, source)
        except OSError:
            same = False
        if same or Path(os.path.abspath(path)) == Path(os.path.abspath(source)):
            raise UserError(f"{path} is also the input; name another file for the output", where)


@contextmanager
def atomic_output(
    path: Path, where: str, mode: str = "w", inputs: Iterable[Path | str] = (), **open_args: Any
) -> Iterator[IO[Any]]:
    """An open temporary file that becomes ``path`` when the block ends without an exception;
    missing folders are created. UserError (naming ``where``) for a folder, an input, or a folder
    that cannot be created or written."""
    path = Path(path)
    check_output(path, where, inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}", where) from None
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
        os.chmod(tmp, _file_mode(path))  # mkstemp's 0600 is not what a user's new file gets
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_output(path: Path, data: bytes | str, where: str) -> None:
    """``data`` written atomically to ``path`` (see :func:`atomic_output`)."""
    if isinstance(data, str):
        with atomic_output(path, where, "w", encoding="utf-8") as f:
            f.write(data)
    else:
        with atomic_output(path, where, "wb") as f:
            f.write(data)


def _file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777  # replacing a file keeps its permissions
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
