"""The ``output`` and ``nightly`` sections: where runs are published and how a scheduled run behaves."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from spray.config.section import Section

log = logging.getLogger(__name__)


class OutputConfig(Section):
    """Where runs go and how many are kept."""

    runs_dir: Path = Field(
        Path("runs"),
        description="Directory holding published runs; relative to the config's folder, ~ and environment "
        "variables ($HOME, ${RUNS}) expanded (an unset one is refused).",
    )
    keep_runs: int = Field(
        10,
        ge=1,
        le=100_000,
        description="Retention: keep the newest N runs of this audit (its name and dataset key; other audits sharing the runs folder keep theirs). Each run holds its own heatmaps and thumbnails: about 280 MB per 100k 28×28 images (docs/nightly.md, Disk per run).",
    )
    resume_days: float = Field(
        7.0,
        ge=0.0,
        le=3650.0,
        description="Shard manifests of a run that was never published (it failed or was stopped) are kept "
        "this many days after their last write for a resume, then removed once a newer run is published "
        "(at 1M images they take ~125 MB a run; without them a resume still finds its heatmaps in the cache, "
        "by content, and only reads the inputs again).",
    )
    keep_corrections: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Retention of spray correct's output: keep the newest N published corrections of this "
        "dataset in runs/corrections (None: keep every one, since a corrected model may be in use).",
    )
    html_report: bool = Field(True, description="Write a static report.html into each run.")


class NightlyConfig(Section):
    """Scheduling behaviour."""

    notify_command: str | None = Field(
        None,
        description="Command run with the summary path appended when there are new findings (exit 10): one "
        "string, split like a shell command line (Python's shlex: quote an argument that holds spaces), run "
        "without a shell (wrap it in sh -c '...' for pipes); a YAML list is refused. A program given as "
        "./name or ../name is relative to the config's folder (as every path of the config is); a bare name "
        "is looked up on PATH.",
    )
    notify_timeout_s: float = Field(
        120.0,
        gt=0.0,
        le=86_400.0,
        description="Seconds the notify command may take; then it and every process it started are killed "
        "(the run stays published and its exit code stands).",
    )
    fail_on_findings: bool = Field(False, description="Exit 10 on any suspicious finding, not only new ones.")
    match_jaccard: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Change detection: a suspicious cluster is the same as one of the previous run (same "
        "class) when the Jaccard index of their members reaches this (members compared by image content when "
        "both runs record it, so renamed files keep their cluster; else by sample id)...",
    )
    match_correlation: float = Field(
        0.8,
        ge=-1.0,
        le=1.0,
        description="...or when the Pearson correlation of their mean heatmaps reaches this (recognises a "
        "cluster whose members were replaced).",
    )
    grown_min: float = Field(
        0.1,
        ge=0.0,
        description="Change detection: a matched cluster has grown when it gained at least one member and at "
        "least this fraction of its previous size (5 % new data grows every cluster by about 5 %: not news).",
    )
    match_contained: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="Change detection: a suspicious cluster left without a match is part of a suspicious cluster "
        "of the other run when at least this share of its members are among that cluster's members and carriers "
        "(a cluster that split in two, or two that merged): persisting, not new or resolved.",
    )

    @field_validator("notify_command", mode="before")
    @classmethod
    def _one_string(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            words = " ".join(shlex.quote(str(w)) for w in v)
            raise ValueError(f"is a list; give one string, split like a shell command line, e.g. {words!r}")
        return v

    @field_validator("notify_command")
    @classmethod
    def _command_given(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("is empty; give a command, or remove the key")
        if v is None:
            return v
        try:
            program = shlex.split(v)[0]
        except ValueError as err:  # found at alert time, it crashed a published run's job (exit 1, no alert)
            raise ValueError(
                f"cannot be split like a shell command line ({err}): close the quote, or escape it"
            ) from None
        if program.startswith(("./", "../")):
            return v  # beside the config: resolved against its folder when the config loads, checked then
        if "/" in program and shutil.which(program) is None:
            log.warning(
                "nightly.notify_command: the program %r does not exist or is not executable: the notification "
                "will fail; fix the path (./ and ../ are relative to the config's folder) or chmod +x it",
                program,
            )
        elif shutil.which(program) is None:
            # a cron job's PATH may differ from this shell's: said, not refused
            log.warning(
                "nightly.notify_command: the program %r is not found on PATH (%s): the notification will "
                "fail unless the job's PATH has it; give its full path",
                program,
                os.environ.get("PATH", ""),
            )
        return v
