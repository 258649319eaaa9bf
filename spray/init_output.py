"""The file ``spray init`` writes: which existing file it may replace, and writing it without a traceback.

``spray init`` never overwrites a file without ``--force``, with one exception: a config it wrote itself
and marked as failed, *as long as nobody edited it since* (its first line carries the digest of the rest).
After a failed check init tells the user to edit that file; a rerun must not throw those edits away.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from spray.errors import ConfigError

#: First line of a config whose check failed in ``spray init``: a rerun of init may overwrite that file
#: while it is unedited (the line ends with the digest of the text below it).
FAILED_CHECK = (
    "# spray init: the check of this config FAILED (see its message); rerunning spray init overwrites it "
    "unless you edit it"
)
#: The marker before 6 Dec 2026, without a digest: it promised the overwrite, so its file is taken as unedited.
LEGACY_FAILED_CHECK = (
    "# spray init: the check of this config FAILED (see its message); rerunning spray init overwrites it."
)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mark_failed(output: Path) -> None:
    """Keep a config whose check failed, marked so that rerunning ``spray init`` may overwrite it until it is
    edited.

    Parameters
    ----------
    output : Path
        The config ``spray init`` has just written.
    """
    body = output.read_text()
    output.write_text(f"{FAILED_CHECK} [{_digest(body)}]\n{body}")


def _failed_unedited(output: Path) -> bool | None:
    """None when ``output`` is no config init marked as failed; else whether it is still as init left it."""
    try:
        head, _, body = output.read_text().partition("\n")
    except (OSError, UnicodeDecodeError):
        return None
    if not head.startswith(FAILED_CHECK.split(";")[0]):
        return None
    return head in (f"{FAILED_CHECK} [{_digest(body)}]", LEGACY_FAILED_CHECK)


def refuse_output(output: Path, *, force: bool) -> None:
    """Refuse an ``-o`` that ``spray init`` must not write: an existing file (without ``force``, unless it is
    init's own unedited failed config), a folder, or a symbolic link.

    Parameters
    ----------
    output : Path
        The ``-o`` given.
    force : bool
        ``--force``: an existing file may be replaced.

    Raises
    ------
    ConfigError
        Naming the problem and what to pass instead.
    """
    if output.is_symlink():
        # replacing the link by a file, or writing through it with paths relative to another folder than
        # the one the config is read from, would both surprise: the user names the file itself
        raise ConfigError(
            f"-o {str(output)!r} is a symbolic link (to {os.readlink(output)!r}): spray init does not write "
            f"through links; give the file itself, -o {str(output.resolve())!r}, or another file."
        )
    if output.is_dir():
        raise ConfigError(
            f"-o {str(output)!r} is a folder: give the config file's path, e.g. -o {str(output / 'spray.yaml')!r}."
        )
    if not output.exists() or force:
        return
    unedited = _failed_unedited(output)
    if unedited is False:
        raise ConfigError(
            f"{str(output)!r} was edited after spray init marked it as failed: kept. Use your edits with "
            f"spray audit --config {output}, or pass --force to overwrite it, or -o another file."
        )
    if unedited is None:
        raise ConfigError(
            f"{str(output)!r} already exists; pass --force to overwrite it, or -o another file."
        )


def write_output(output: Path, text: str) -> None:
    """Write the config ``text`` to ``output`` through a temporary file beside it (removed on failure).

    Raises
    ------
    ConfigError
        When the folder cannot be created or written (no permission, read-only, full).
    """
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, output)
    except OSError as err:
        with contextlib.suppress(OSError):  # a folder that could not be made holds no temporary file
            tmp.unlink()
        raise ConfigError(
            f"cannot write -o {str(output)!r}: {err.strerror or err}; give a file in a folder you can write to."
        ) from None
