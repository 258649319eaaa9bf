"""The flags as a table: export columns and formats, and a CSV that a spreadsheet cannot run."""

from __future__ import annotations

import io
import json
from typing import Any

EXPORT_FORMATS = ("csv", "json", "parquet")
EXPORT_COLUMNS = [
    "dataset",
    "sample_id",
    "status",
    "note",
    "run_id",
    "cluster_key",
    "source",
    "author",
    "flagged_at",
    "content_hash",
    "class_name",
    "class_index",
]
MIME_TYPES = {"csv": "text/csv", "json": "application/json", "parquet": "application/vnd.apache.parquet"}
# A spreadsheet evaluates a cell that starts with one of these as a formula (=HYPERLINK(...) sends data
# anywhere); OWASP's list plus the line feed.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")
#: Columns an unlearning job matches on: kept exact in every format (an id with a ``'`` added names no image).
KEY_COLUMNS = ("dataset", "sample_id")
#: Integer columns, nullable (a flag set without its class has none): 3, never "3" or 3.0, in every format.
INTEGER_COLUMNS = ("class_index",)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def neutralise_formula(value: Any) -> Any:
    """Prefix ``'`` to a text cell a spreadsheet would run as a formula (``=HYPERLINK(...)``, ``@SUM``).

    Plain numbers such as ``-3`` stay as they are; anything else starting with one of
    :data:`FORMULA_PREFIXES` becomes ``'=...`` (shown as text by Excel, LibreOffice and Google Sheets).
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not _is_number(value):
        return "'" + value
    return value


def frame_to_bytes(frame: Any, fmt: str) -> bytes:
    """Serialise an export table (see :meth:`FlagStore.export_frame`).

    CSV is for spreadsheets: text cells that would run as formulas are neutralised
    (:func:`neutralise_formula`), except the :data:`KEY_COLUMNS`, which stay exact so that the ids name the
    samples. JSON and Parquet keep every value exactly. The :data:`INTEGER_COLUMNS` are integers in every
    format (empty or null where a flag has none).
    """
    # None and an int in one column make pandas floats (3.0): the integer columns are nullable integers
    frame = frame.astype({c: "Int64" for c in INTEGER_COLUMNS if c in frame.columns})
    if fmt == "csv":
        safe = frame.astype(object)
        if len(frame):
            text = [c for c in safe.columns if c not in KEY_COLUMNS]
            safe[text] = safe[text].map(neutralise_formula)
        return safe.to_csv(index=False).encode()
    if fmt == "json":
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        return (json.dumps(records, indent=1) + "\n").encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        as_text = {c: "string" for c in frame.columns if c not in INTEGER_COLUMNS}
        frame.astype(as_text).to_parquet(buf, index=False)
        return buf.getvalue()
    raise ValueError(f"format must be one of {EXPORT_FORMATS}, not {fmt!r}")
