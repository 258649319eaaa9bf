"""``python -m spray.cli`` (what torchrun launches): the ``spray`` command."""

import sys

from spray.cli import main

sys.exit(main())
