"""What the dashboard's tests need to know about a run, read through spray's run reader."""

from __future__ import annotations

from pathlib import Path

from spray.records import ClusterFinding
from spray.runs.reader import RunReader


def top_finding(run: Path) -> ClusterFinding:
    """The run's most suspicious finding, with its members."""
    return RunReader.open(run).findings()[0]


def first_key(run: Path) -> str:
    """The key of the run's most suspicious finding (summary.json only: works when array files are damaged)."""
    return RunReader.open(run).summary.findings[0].key


def findings(run: Path) -> list[ClusterFinding]:
    """Every finding with its members, most suspicious first."""
    return RunReader.open(run).findings()
