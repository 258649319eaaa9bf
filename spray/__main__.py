"""``python -m spray``: the ``spray`` command (as ``python -m spray.cli``)."""

from spray.cli import entry

entry()
