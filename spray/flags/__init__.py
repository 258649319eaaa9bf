"""Flags: what an auditor decided about samples (unlearn, investigate, ok), kept beyond any run.

- :mod:`spray.flags.records`: the statuses and the records the store returns.
- :mod:`spray.flags.store`: :class:`FlagStore`, the SQLite history of flag / unflag actions.
- :mod:`spray.flags.table`: the export table (CSV safe for spreadsheets, JSON, Parquet).
- :mod:`spray.flags.content`: whether a flag still names the content it was set on in a later run.

Command line::

    spray flags set --runs-dir runs --finding dog/k3/c2
    spray flags export --db runs/flags.sqlite --format csv --status unlearn -o unlearn.csv
    spray flags check --runs-dir runs
"""

from spray.flags.content import ChangedFlag, FlagBinding, bind_flags
from spray.flags.records import STATUSES, UNFLAG, Flag, FlagAction, FlagConflict, FlagEvent
from spray.flags.schema import SCHEMA_VERSION
from spray.flags.store import (
    DEFAULT_DB_NAME,
    FlagStore,
    default_author,
    default_db_path,
)
from spray.flags.table import (
    EXPORT_COLUMNS,
    EXPORT_FORMATS,
    FORMULA_PREFIXES,
    MIME_TYPES,
    frame_to_bytes,
    neutralise_formula,
)

__all__ = [
    "DEFAULT_DB_NAME",
    "EXPORT_COLUMNS",
    "EXPORT_FORMATS",
    "FORMULA_PREFIXES",
    "MIME_TYPES",
    "SCHEMA_VERSION",
    "STATUSES",
    "UNFLAG",
    "ChangedFlag",
    "Flag",
    "FlagAction",
    "FlagBinding",
    "FlagConflict",
    "FlagEvent",
    "FlagStore",
    "bind_flags",
    "default_author",
    "default_db_path",
    "frame_to_bytes",
    "neutralise_formula",
]
