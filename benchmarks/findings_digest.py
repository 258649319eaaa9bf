"""Digest of a run's findings (keys, scores, flags, evidence, members), read through the run reader.

    python benchmarks/findings_digest.py RUN_DIR      # prints "<n findings> <digest16>"

The same digest as the one quoted for the demo before layout 2 (``83 1ff186ec1b9f376e``): scores are
rounded to 6 decimals, as layout 1 stored them, so a run of either layout with the same findings gives
the same digest.
"""

from __future__ import annotations

import hashlib
import json
import sys

from spray.runs.reader import RunReader


def findings_digest(run_dir: str) -> tuple[int, str]:
    """``(number of findings, first 16 hex digits of the digest)``."""
    run = RunReader.open(run_dir)
    rows = [
        (f.key, round(f.score, 6), f.suspicious, f.evidence, sorted(f.member_ids)) for f in run.findings()
    ]
    return len(rows), hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


if __name__ == "__main__":
    from spray.runs.errors import RunReadError

    try:
        n, digest = findings_digest(sys.argv[1])
    except RunReadError as err:
        sys.exit(f"error: {err}")
    sys.stdout.write(f"{n} {digest}\n")
