"""Atomic writes: a file is either the old one or the new one, never a partial one.

Every file of the runs folder is written to a temporary name beside its destination, fsynced and
``os.replace``d. A write that fails because the disk is full, the folder is read-only or not ours raises
:class:`~spray.runs.errors.RunWriteError` naming the place ("no space left on <folder>"), after removing
its temporary file: what was there before is intact. numpy reports a full disk as a short write
(``OSError: 2587200 requested and 905152 written``, without an errno): that is "no space left" too.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from spray.runs.errors import RunWriteError
from spray.runs.layout import STAGING_DIR

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
#: numpy's ``tofile`` when ``fwrite`` wrote less than asked (a full disk or quota), with no errno
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")


def _short_write(err: OSError) -> tuple[int, int] | None:
    """``(requested, written)`` bytes of a short write reported without an errno, else None."""
    if err.errno is not None:
        return None
    m = _SHORT_WRITE.search(str(err))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _size(n: int) -> str:
    """Bytes for people: ``2.6 MB``."""
    if n < 1000:
        return f"{n} bytes"
    x = n / 1000
    for unit in ("kB", "MB"):
        if x < 1000:
            return f"{x:.1f} {unit}"
        x /= 1000
    return f"{x:.1f} GB"


def write_error(path: Path, err: OSError, option: str | None = None) -> RunWriteError | None:
    """The clear error for an ``OSError`` raised while writing ``path``, or None when it is another kind.

    A full disk (``ENOSPC``, ``EDQUOT``, or numpy's short write) names the folder and, for a short write,
    the size the file needed; a read-only or foreign folder names the folder.

    Parameters
    ----------
    path : Path
        The file (or folder) being written.
    err : OSError
        What the operating system said.
    option : str, optional
        The option that chose where ``path`` is (``"-o"``), named in the fix; default: the runs folder's
        ``output.runs_dir (--runs-dir)``, and what a failed run leaves intact.
    """
    folder = path if path.is_dir() else path.parent
    if option is None:
        # A run being written lives in a private staging folder, removed on failure: name the runs folder.
        staging = next((p for p in (folder, *folder.parents) if p.name == STAGING_DIR), None)
        place = staging.parent if staging is not None else folder
        option = "output.runs_dir (--runs-dir)"
        intact = "; previous runs and the cache are intact, and the next run resumes from the finished shards"
    else:
        place, intact = folder, ""
    short = _short_write(err)
    if err.errno in _NO_SPACE or short is not None:
        need = "" if short is None else f", which alone needed {_size(short[0])}: {_size(short[1])} fit"
        return RunWriteError(
            path,
            f"no space left on {place} (while writing {path.name}{need}). Free some space there or point "
            f"{option} at a larger disk{intact}.",
        )
    if err.errno in _NOT_WRITABLE:
        kind = "a read-only file system" if err.errno == errno.EROFS else "not writable for this user"
        return RunWriteError(
            path,
            f"cannot write {path}: {folder} is {kind}. Point {option} at a folder this user can write to.",
        )
    return None


@contextmanager
def translate_write_errors(path: Path, option: str | None = None) -> Iterator[None]:
    """Turn "disk full" (also numpy's short write) and "read-only" ``OSError``s raised inside the block
    into :class:`RunWriteError` (naming ``option``, see :func:`write_error`)."""
    try:
        yield
    except OSError as err:
        clear = write_error(path, err, option)
        if clear is None:
            raise
        raise clear from err


def _read_umask() -> int:
    """The process's umask: from /proc on Linux (reading it by setting it would change it for every thread
    meanwhile), else by setting and restoring it once, at import."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _mode_for(path: Path) -> int:
    """The mode a plain ``open()`` gives: an existing file's own mode (a file made private stays private),
    else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


@contextmanager
def atomic_file(path: Path, option: str | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success fsync it and ``os.replace`` it into place.

    A crash (or an exception) at any moment leaves either the old file or the new one, never a partial
    one, and no temporary file when the failure is an exception.

    Raises
    ------
    RunWriteError
        No space left, read-only file system, or no permission (the fix names ``option``, the option that
        chose ``path``, when given: see :func:`write_error`).
    """
    with translate_write_errors(path, option):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                # mkstemp makes the file private (0600): give it the mode a plain open() would
                os.fchmod(fh.fileno(), _mode_for(path))
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_bytes(path: Path, data: bytes, option: str | None = None) -> None:
    """Write ``data`` to ``path`` atomically (``option``: see :func:`atomic_file`)."""
    with atomic_file(path, option) as fh:
        fh.write(data)


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON: sorted keys and fixed indentation, so identical content gives identical bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode()


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as canonical JSON (:func:`json_bytes`), atomically."""
    atomic_write_bytes(path, json_bytes(obj))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` atomically (a crash leaves no partial shard)."""
    with atomic_file(path) as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` atomically."""
    with atomic_file(path) as fh:
        np.save(fh, array)
