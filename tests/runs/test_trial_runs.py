"""A trial on the first N samples (``data.limit``) is an audit of its own.

An outside check (6 Dec 2026): a config copied with ``data.limit: 3000`` and the same ``name`` and
``data.name`` was taken for the full audit. Its run counted in the full audit's retention (``spray run
--keep-runs 1`` deleted the full run the flags were set on), 99 valid flags were called "deleted files" and
left out of ``spray flags export --runs-dir``, and ``spray correct`` corrected from the trial's 210
reference samples instead of the full run's 656.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from spray.cli import main
from spray.config import load_config
from spray.correct.source import find_source_run
from spray.flags.content import bind_flags
from spray.flags.store import FlagStore
from spray.runs.publish import list_runs
from spray.runs.reader import RunReader
from tests.helpers import small_folder_config


def _configs(tmp_path: Path) -> tuple[Path, Path]:
    raw = small_folder_config(tmp_path)
    raw["name"] = "nightly"
    full = tmp_path / "full.yaml"
    full.write_text(yaml.safe_dump(raw))
    raw["data"]["limit"] = 12  # the first 12 files in name order: the cat folder only
    raw["analysis"]["min_class_size"] = 5
    trial = tmp_path / "trial.yaml"
    trial.write_text(yaml.safe_dump(raw))
    return full, trial


def test_a_trial_run_is_not_the_full_audits_run(tmp_path: Path) -> None:
    full_cfg, trial_cfg = _configs(tmp_path)
    assert main(["audit", "-q", "--config", str(full_cfg)]) == 0
    (full_run,) = list_runs(tmp_path / "runs")
    full = RunReader.open(full_run)
    assert full.summary.name == "nightly"
    # flags set on the full run, on samples the trial leaves out (the dog folder)
    dogs = [s for s in full.sample_ids() if s.startswith("dog/")][:3]
    db = tmp_path / "runs" / "flags.sqlite"
    hashes = full.content_hashes()
    FlagStore(db).flag(full.summary.dataset, dogs, "unlearn", content_hashes={s: hashes[s] for s in dogs})

    assert main(["run", "--config", str(trial_cfg), "--keep-runs", "1"]) in (0, 10)
    runs = list_runs(tmp_path / "runs")
    assert full_run in runs, "retention of the trial deleted the full audit's run"
    trial = RunReader.open(next(r for r in runs if r != full_run))
    assert trial.summary.name == "nightly (data.limit 12)" and trial.summary.n_samples == 12
    # the trial is compared with no earlier run of its own, not with the full run
    changes = trial.changes()
    assert changes is not None and changes.previous_run_id is None

    # the flags on samples the trial did not read are not "deleted files"
    binding = bind_flags(FlagStore(db).current(full.summary.dataset), trial.content_hashes(), run=trial.path)
    assert not binding.changed and len(binding.bound) == 3

    # a correction of the full config takes the full audit's run, though the trial's is newer
    cfg = load_config(full_cfg)
    source = find_source_run(
        tmp_path / "runs", cfg.dataset_key(), full.summary.hashes["model"], None, cfg.audit_name()
    )
    assert source.path == full_run and len(source.sample_ids) == 24


def test_a_trial_published_before_trials_had_their_own_name_is_read_as_one(tmp_path: Path) -> None:
    """An outside check of the upgrade: a trial run published by the previous release carries the full
    audit's name, and the full audit's next nightly run compared with it (exit 10, '130 images added'),
    retention deleted the full run instead, and spray correct and spray flags export took it."""
    import json

    from spray.runs.changes import previous_run
    from spray.runs.publish import newest_runs

    full_cfg, trial_cfg = _configs(tmp_path)
    assert main(["audit", "-q", "--config", str(full_cfg)]) == 0
    (full_run,) = list_runs(tmp_path / "runs")
    assert main(["audit", "-q", "--config", str(trial_cfg)]) == 0
    trial_run = next(r for r in list_runs(tmp_path / "runs") if r != full_run)
    doc = json.loads((trial_run / "summary.json").read_text())
    doc["name"] = "nightly"  # as the previous release published it
    (trial_run / "summary.json").write_text(json.dumps(doc))

    assert RunReader.open(trial_run).summary.name == "nightly (data.limit 12)"
    reader, _, _ = previous_run(
        tmp_path / "runs", name="nightly", dataset=RunReader.open(full_run).summary.dataset
    )
    assert reader is not None and reader.path == full_run
    dataset = RunReader.open(full_run).summary.dataset
    assert newest_runs(tmp_path / "runs", full_first=True)[dataset] == full_run
    assert newest_runs(tmp_path / "runs")[dataset] == trial_run  # what spray flags set --runs-dir flags on
    assert main(["run", "--config", str(full_cfg), "--keep-runs", "1"]) == 0
    assert full_run in list_runs(tmp_path / "runs")
