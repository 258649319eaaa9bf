"""``python -m spray.config > docs/config.md`` writes the config reference."""

import sys

from spray.config.reference import config_reference_markdown

sys.stdout.write(config_reference_markdown() + "\n")
