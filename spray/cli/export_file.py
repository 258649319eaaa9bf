"""The file ``spray flags export -o`` writes: its format from its name, and the paths it must not overwrite."""

from __future__ import annotations

from pathlib import Path

from spray.errors import ConfigError

#: File name endings of each export format (``-o flags.json`` means JSON unless ``--format`` says otherwise).
_ENDINGS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
#: Endings of other data formats, whose programs would misread the CSV an export writes by default.
_OTHER_FORMATS = {
    ".xlsx",
    ".xls",
    ".xlsm",
    ".ods",
    ".tsv",
    ".feather",
    ".arrow",
    ".pkl",
    ".pickle",
    ".h5",
    ".hdf5",
}


def export_format(out: Path | None, given: str | None) -> str:
    """The format of the export: ``--format``, else the one ``-o``'s ending names, else CSV.

    Raises
    ------
    ConfigError
        ``--format`` and ``-o``'s ending name different formats (``-o flags.json --format csv``), or ``-o``'s
        ending names another data format and ``--format`` is not given (``-o flags.xlsx``; ``.txt`` gets CSV).
    """
    named = _ENDINGS.get(out.suffix.lower()) if out is not None else None
    if out is not None and out.suffix.lower() in _OTHER_FORMATS and given is None:
        # an Excel or TSV name would get CSV bytes that its program then misreads
        raise ConfigError(
            f"-o {out}: spray exports CSV, JSON or Parquet, and {out.suffix!r} names none of them. Give a file "
            "ending in .csv, .json or .parquet, or --format to write that format under this name."
        )
    if given is not None and named is not None and named != given:
        raise ConfigError(
            f"-o {out} names a {named} file but --format is {given}: drop --format (the ending decides) or give "
            f"a file ending in .{given}."
        )
    return given or named or "csv"


def check_export_path(out: Path, fmt: str) -> None:
    """Refuse an ``-o`` that is a folder, lies in no folder, or is an existing file that is no export (a config
    or an image would be overwritten)."""
    if out.is_dir():
        raise ConfigError(f"-o {out} is a folder: give a file name, e.g. -o {out / ('flags.' + fmt)}.")
    if not out.parent.is_dir():
        raise ConfigError(
            f"The folder of -o {out} does not exist ({out.parent}): create it first or choose another path."
        )
    if out.is_file() and not _an_export(out):
        raise ConfigError(
            f"-o {out} exists and holds no earlier flags export (a CSV with its header, JSON flag records, "
            "Parquet): it would be overwritten. Give a new file name."
        )


def _an_export(path: Path) -> bool:
    """Whether the file at ``path`` holds an earlier flags export (a nightly job writing ``-o flags.txt`` replaces
    its own file), by its first bytes: Parquet's magic, the CSV header, or JSON records of a dataset."""
    try:
        with path.open("rb") as f:
            head = f.read(256)
    except OSError:
        return False
    text = head.strip()
    records = text.startswith(b"[") and text[1:].lstrip().startswith(b"{") and b'"dataset"' in text
    return (
        not text
        or head.startswith(b"PAR1")
        or text.startswith(b"dataset,sample_id,")
        or records
        or text == b"[]"
    )
