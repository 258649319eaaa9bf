"""``python -m spray.cli`` (what torchrun launches): the ``spray`` command."""

from spray.cli import entry

entry()
