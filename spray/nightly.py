"""``spray run``: the nightly job — idempotent, incremental, resumable, locked, scalable with torchrun.

One command that cron, a systemd timer, a Kubernetes CronJob, an Airflow ``BashOperator`` or
``prefect shell serve`` call unchanged (examples in ``pipelines/``)::

    spray run --config audit.yaml
    torchrun --standalone --nproc_per_node=4 -m spray.cli run --config audit.yaml

What it adds to :func:`spray.audit.audit`:

- **Exit codes** (:data:`EXIT_OK` 0, :data:`EXIT_FINDINGS` 10, 1 failure, 2 config error,
  :data:`EXIT_LOCKED` 75). 10 means "published, with suspicious clusters that are new or grown since the
  previous run" — or, with ``--fail-on-findings`` / ``nightly.fail_on_findings``, with any suspicious
  cluster at all.
- **Change detection**: the suspicious clusters of the new run are matched with those of the previous
  published run of the same audit (same class, and member-id Jaccard or mean-heatmap correlation above a
  threshold) and classified as new, grown, persisting or resolved; the result is the ``changes`` section
  of summary.json, written before the run is published.
- **Notification**: ``nightly.notify_command`` runs with the summary path appended when the exit code
  is 10.
- **JSON-lines logs** on stderr, every line carrying the run id, the stage and (under torchrun) the rank.
- **A one-line JSON status** on stdout (Airflow pushes the last stdout line to XCom) and, with
  ``--status-file``, in a file: torchrun reports any non-zero worker exit as 1, so a wrapper reads the
  real code there (``pipelines/spray-torchrun.sh``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spray.errors import SprayError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FINDINGS = 10
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 75

# Cluster matching across runs. Cluster ids are arbitrary per run, so a cluster is recognised by its
# members (Jaccard of sample ids: robust while the data mostly stays) or, when many members changed, by
# what the model looks at (Pearson correlation of the mean heatmaps).
JACCARD_MIN = 0.3
CORRELATION_MIN = 0.8
# A matched cluster has "grown" when it gained at least this fraction of its previous members: adding 5 %
# new data grows every cluster by about 5 %, which is not news.
GROW_MIN = 0.1

# Structured fields that log records may carry (``extra=``) and the JSON lines then include.
_LOG_FIELDS = (
    "rank",
    "shard",
    "n_samples",
    "n_computed",
    "n_cached",
    "shards_computed",
    "shards_reused",
    "n_paste_computed",
    "n_paste_cached",
    "exit_code",
    "n_new",
    "n_grown",
    "n_resolved",
    "n_suspicious",
    "run_dir",
    "up_to_date",
)


# ---------------------------------------------------------------------------------------------------------
# Change detection


def _corr(a: Any, b: Any) -> float:
    import numpy as np

    if a is None or b is None or np.shape(a) != np.shape(b):
        return float("nan")
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    d = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / d) if d > 0 else float("nan")


def _previous_findings(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Summary, findings and mean heatmaps (by cluster key) of a published run."""
    import numpy as np

    s = json.loads((run / "summary.json").read_text())
    means: dict[str, Any] = {}
    for c in {int(f["class_index"]) for f in s.get("findings", [])}:
        p = run / "classes" / f"{c}.npz"
        if p.exists():
            with np.load(p, allow_pickle=False) as z:
                for key, mh in zip(z["cluster_keys"].tolist(), z["mean_heatmaps"], strict=True):
                    means[str(key)] = np.asarray(mh, dtype=np.float32)
    return s, s.get("findings", []), means


def find_previous_run(runs_dir: Path, *, name: str, dataset: str, exclude_run_id: str) -> Path | None:
    """The newest published run of the same audit (same ``name`` and dataset key), if any."""
    from spray.runs.storage import list_runs

    for p in list_runs(runs_dir):
        try:
            s = json.loads((p / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if s.get("run_id") != exclude_run_id and s.get("name") == name and s.get("dataset") == dataset:
            return p
    return None


def compare_findings(
    current: list[dict[str, Any]],
    current_means: dict[str, Any],
    previous: list[dict[str, Any]] | None,
    previous_means: dict[str, Any],
    *,
    jaccard_min: float = JACCARD_MIN,
    correlation_min: float = CORRELATION_MIN,
    grow_min: float = GROW_MIN,
) -> dict[str, Any]:
    """Match suspicious clusters across two runs and classify them.

    Parameters
    ----------
    current, previous : list of dict
        Findings in the JSON form of summary.json (``key``, ``class_index``, ``class_name``, ``size``,
        ``score``, ``suspicious``, ``member_ids``); ``previous`` is None when there is no previous run.
    current_means, previous_means : dict
        ``key -> (h, w)`` mean heatmap of each cluster.
    jaccard_min, correlation_min : float
        Two clusters of the same class match when the Jaccard index of their member ids or the
        correlation of their mean heatmaps reaches the threshold. Pairs are assigned one-to-one,
        greedily, best Jaccard (then correlation) first.
    grow_min : float
        A matched cluster is "grown" when ``size >= previous size * (1 + grow_min)`` and it gained at
        least one member.

    Returns
    -------
    dict
        ``new``, ``grown``, ``persisting`` (current suspicious clusters), ``resolved`` (previous
        suspicious clusters with no suspicious match now), their counts and the thresholds used.
        Entries are sorted by class and key so the section is deterministic.
    """
    cur = [f for f in current if f.get("suspicious")]
    prev_all = previous or []
    prev = [p for p in prev_all if p.get("suspicious")]

    def sim(
        f: dict[str, Any], p: dict[str, Any], means_f: dict[str, Any], means_p: dict[str, Any]
    ) -> tuple[float, float]:
        a, b = set(f["member_ids"]), set(p["member_ids"])
        jac = len(a & b) / max(1, len(a | b))
        return jac, _corr(means_f.get(f["key"]), means_p.get(p["key"]))

    def matches(jac: float, corr: float) -> bool:
        return jac >= jaccard_min or (corr == corr and corr >= correlation_min)

    def assign(
        left: list[dict[str, Any]],
        right: list[dict[str, Any]],
        means_left: dict[str, Any],
        means_right: dict[str, Any],
    ) -> dict[int, tuple[int, float, float]]:
        # The mean heatmaps of each side are passed explicitly: "resolved" matches previous clusters
        # (left) against current ones (right), the other way round from "new" and "grown".
        pairs = []
        for i, f in enumerate(left):
            for j, p in enumerate(right):
                if f["class_index"] != p["class_index"]:
                    continue
                jac, corr = sim(f, p, means_left, means_right)
                if matches(jac, corr):
                    pairs.append((-jac, -(corr if corr == corr else -1.0), i, j, jac, corr))
        pairs.sort()
        used_l: set[int] = set()
        used_r: set[int] = set()
        out: dict[int, tuple[int, float, float]] = {}
        for _, _, i, j, jac, corr in pairs:
            if i in used_l or j in used_r:
                continue
            used_l.add(i)
            used_r.add(j)
            out[i] = (j, jac, corr)
        return out

    def entry(f: dict[str, Any]) -> dict[str, Any]:
        return {
            "key": f["key"],
            "class_index": f["class_index"],
            "class_name": f["class_name"],
            "size": f["size"],
            "score": f["score"],
            "rank": f.get("rank"),
        }

    def rnd(x: float) -> float | None:
        return round(x, 4) if x == x else None

    new: list[dict[str, Any]] = []
    grown: list[dict[str, Any]] = []
    persisting: list[dict[str, Any]] = []
    resolved: list[dict[str, Any]] = []
    matched = assign(cur, prev, current_means, previous_means)
    # Unmatched current clusters are new; say so when they were present but not yet suspicious before.
    unmatched_cur = [f for i, f in enumerate(cur) if i not in matched]
    was = assign(
        unmatched_cur, [p for p in prev_all if not p.get("suspicious")], current_means, previous_means
    )
    for i, f in enumerate(cur):
        if i in matched:
            j, jac, corr = matched[i]
            p = prev[j]
            e = {
                **entry(f),
                "previous_key": p["key"],
                "previous_size": p["size"],
                "previous_score": p["score"],
                "jaccard": round(jac, 4),
                "correlation": rnd(corr),
            }
            gained = f["size"] - p["size"]
            (grown if gained >= 1 and f["size"] >= p["size"] * (1 + grow_min) else persisting).append(e)
    for i, f in enumerate(unmatched_cur):
        e = entry(f)
        if i in was:
            j, jac, corr = was[i]
            p = [q for q in prev_all if not q.get("suspicious")][j]
            e.update(
                previous_key=p["key"], previous_size=p["size"], jaccard=round(jac, 4), correlation=rnd(corr)
            )
            e["note"] = "present in the previous run but not suspicious then"
        new.append(e)
    matched_prev = {j for j, _, _ in matched.values()}
    # A resolved cluster may still exist below the alarm threshold; name it so the change can be checked.
    now_all = [f for f in current if not f.get("suspicious")]
    left_prev = [p for j, p in enumerate(prev) if j not in matched_prev]
    still = assign(left_prev, now_all, previous_means, current_means)
    for j, p in enumerate(left_prev):
        e = {
            "previous_key": p["key"],
            "class_index": p["class_index"],
            "class_name": p["class_name"],
            "previous_size": p["size"],
            "previous_score": p["score"],
            "key": None,
        }
        if j in still:
            k, jac, corr = still[j]
            e.update(
                key=now_all[k]["key"], size=now_all[k]["size"], jaccard=round(jac, 4), correlation=rnd(corr)
            )
            e["note"] = "still a cluster, now below the alarm threshold"
        resolved.append(e)

    def order(xs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(xs, key=lambda e: (e["class_index"], str(e.get("key") or e.get("previous_key"))))

    return {
        "new": order(new),
        "grown": order(grown),
        "persisting": order(persisting),
        "resolved": order(resolved),
        "n_new": len(new),
        "n_grown": len(grown),
        "n_resolved": len(resolved),
        "n_suspicious": len(cur),
        "matching": {"jaccard_min": jaccard_min, "correlation_min": correlation_min, "grow_min": grow_min},
    }


def changes_since_previous(report: Any, runs_dir: Path) -> dict[str, Any]:
    """The ``changes`` section for a finished (not yet published) report.

    Parameters
    ----------
    report : AuditReport
        The new run's report.
    runs_dir : Path
        Where the previous runs are.
    """
    from spray.audit import finding_to_dict

    current = [finding_to_dict(f, rank=i + 1) for i, f in enumerate(report.findings)]
    means = {f.key: f.mean_heatmap for f in report.findings}
    prev_dir = find_previous_run(
        runs_dir,
        name=report.extra.get("name", ""),
        dataset=report.extra.get("dataset", ""),
        exclude_run_id=report.run_id,
    )
    if prev_dir is None:
        out = compare_findings(current, means, None, {})
        out.update(previous_run_id=None, previous_run=None)
        return out
    s, prev, prev_means = _previous_findings(prev_dir)
    out = compare_findings(current, means, prev, prev_means)
    out.update(previous_run_id=s.get("run_id"), previous_run=prev_dir.name)
    return out


def exit_code_for(summary: dict[str, Any], *, fail_on_findings: bool, up_to_date: bool) -> int:
    """0, or 10 when there is something a person should look at.

    A fresh run gives 10 when a suspicious cluster is new or has grown since the previous run (or, with
    ``fail_on_findings``, when any cluster is suspicious). An up-to-date run was already reported when it
    was published, so it gives 0 — except with ``fail_on_findings``, where a gate must not turn green
    just because the same run is asked for twice.
    """
    n_susp = sum(1 for f in summary.get("findings", []) if f.get("suspicious"))
    if fail_on_findings and n_susp:
        return EXIT_FINDINGS
    if up_to_date:
        return EXIT_OK
    ch = summary.get("changes") or {}
    return EXIT_FINDINGS if ch.get("n_new", 0) + ch.get("n_grown", 0) > 0 else EXIT_OK


def notify(command: str, summary_path: Path, *, env: dict[str, str], timeout: float = 120.0) -> int | None:
    """Run ``command`` with the summary path appended (no shell; wrap in ``sh -c`` for pipes).

    Returns the command's exit status, or None when it could not be started or timed out. A failing
    notifier is logged, never fatal: the run itself has been published.
    """
    argv = [*shlex.split(command), str(summary_path)]
    try:
        res = subprocess.run(argv, env={**os.environ, **env}, timeout=timeout, capture_output=True, text=True)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("notify command %r failed: %s", command, err)
        return None
    if res.returncode != 0:
        log.error("notify command %r exited %d: %s", command, res.returncode, res.stderr.strip()[-500:])
    else:
        log.info("notified: %s", command)
    return res.returncode


# ---------------------------------------------------------------------------------------------------------
# Logging


class _RunContextFilter(logging.Filter):
    """Stamps records with ``spray.audit.RUN_CONTEXT`` (run id, stage, rank) once that module is loaded.

    Looked up through ``sys.modules`` rather than imported, so that a bad config is reported before
    torch (which spray.audit pulls in) is imported.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = getattr(sys.modules.get("spray.audit"), "RUN_CONTEXT", None) or {}
        for key, value in ctx.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _configure_logging(verbose: bool, fmt: str) -> None:
    from spray.cli import JsonLogFormatter, setup_logging

    class NightlyJsonFormatter(JsonLogFormatter):
        """The CLI's JSON lines plus the structured fields of the nightly job (counts, shard, rank)."""

        def format(self, record: logging.LogRecord) -> str:
            d = json.loads(super().format(record))
            for key in _LOG_FIELDS:
                if hasattr(record, key) and key not in d:
                    d[key] = getattr(record, key)
            if record.exc_info:
                d["exc"] = self.formatException(record.exc_info)
            return json.dumps(d, default=str)

    setup_logging(verbose, json_logs=fmt == "json")
    for h in logging.getLogger().handlers:
        if fmt == "json":
            h.setFormatter(NightlyJsonFormatter())
        h.addFilter(_RunContextFilter())


def _write_status(path: str | None, status: dict[str, Any]) -> None:
    line = json.dumps(status, sort_keys=True)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if path:
        from spray.runs.storage import atomic_write_bytes

        atomic_write_bytes(Path(path), (line + "\n").encode())


# ---------------------------------------------------------------------------------------------------------
# The command


def cmd_run(args: argparse.Namespace) -> int:
    """``spray run``: the scheduled audit (see the module docstring for the exit codes)."""
    _configure_logging(args.verbose, args.log_format)
    rank = int(os.environ.get("RANK", "0"))
    t0 = time.perf_counter()
    status: dict[str, Any] = {"exit_code": EXIT_FAILURE, "status": "failed"}
    try:
        code = _run(args, status)
    except SprayError as err:
        code = err.exit_code
        status.update(exit_code=code, status="locked" if code == EXIT_LOCKED else "failed", error=str(err))
        log.error("%s", err, extra={"exit_code": code})
        code_final = code
    except Exception as err:  # a bug: log it as one JSON record (with traceback) rather than a raw dump
        log.exception("run failed: %s: %s", type(err).__name__, err, extra={"exit_code": EXIT_FAILURE})
        status.update(exit_code=EXIT_FAILURE, status="failed", error=f"{type(err).__name__}: {err}")
        code_final = EXIT_FAILURE
    else:
        code_final = code
    finally:
        _shutdown_dist()
    status["seconds"] = round(time.perf_counter() - t0, 3)
    if rank == 0:
        _write_status(getattr(args, "status_file", None), status)
    return code_final


def _shutdown_dist() -> None:
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _run(args: argparse.Namespace, status: dict[str, Any]) -> int:
    from spray.config import load_config

    # The config is checked before torch is imported: a bad config fails (exit 2) in well under a second.
    cfg = load_config(args.config)
    if args.runs_dir:
        cfg.output.runs_dir = Path(args.runs_dir).resolve()
    if args.keep_runs is not None:
        cfg.output.keep_runs = args.keep_runs
    fail_on_findings = bool(args.fail_on_findings or cfg.nightly.fail_on_findings)
    runs_dir = Path(cfg.output.runs_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from spray.runs.locking import RunLock

        # Answer "already running" (75) at once, before seconds of imports; audit() takes the lock for
        # real below (a run that starts in between is still caught there).
        with RunLock(runs_dir):
            pass
    from spray.audit import audit

    def before_write(report: Any) -> None:
        report.extra["changes"] = changes_since_previous(report, runs_dir)
        ch = report.extra["changes"]
        log.info(
            "changes since %s: %d new, %d grown, %d persisting, %d resolved suspicious clusters",
            (ch["previous_run_id"] or "no previous run")[:16],
            ch["n_new"],
            ch["n_grown"],
            len(ch["persisting"]),
            ch["n_resolved"],
            extra={"n_new": ch["n_new"], "n_grown": ch["n_grown"], "n_resolved": ch["n_resolved"]},
        )

    report = audit(
        cfg, device=args.device, progress=args.progress, force=args.force, before_write=before_write
    )
    if int(os.environ.get("RANK", "0")) != 0:
        # Rank 0 merges, publishes, notifies and reports; the other ranks are done after the batch stage.
        return EXIT_OK
    up_to_date = bool(report.extra.get("up_to_date"))
    summary_path = Path(report.run_dir) / "summary.json"
    summary = json.loads(summary_path.read_text())
    code = exit_code_for(summary, fail_on_findings=fail_on_findings, up_to_date=up_to_date)
    ch = summary.get("changes") or {}
    n_susp = sum(1 for f in summary.get("findings", []) if f.get("suspicious"))
    status.update(
        exit_code=code,
        status="up_to_date" if up_to_date else "published",
        run_id=report.run_id,
        run_dir=report.run_dir,
        summary=str(summary_path),
        n_suspicious=n_susp,
        n_new=ch.get("n_new"),
        n_grown=ch.get("n_grown"),
        n_resolved=ch.get("n_resolved"),
    )
    report_html = Path(report.run_dir) / "report.html"
    if report_html.exists():
        status["report"] = str(report_html)
    if up_to_date:
        log.info(
            "up to date: run %s is already published at %s; nothing recomputed",
            report.run_id[:16],
            report.run_dir,
            extra={"exit_code": code, "run_dir": report.run_dir, "up_to_date": True},
        )
        return code
    log.info(
        "published %s: %d suspicious clusters (%s new, %s grown, %s resolved); exit %d",
        report.run_dir,
        n_susp,
        ch.get("n_new"),
        ch.get("n_grown"),
        ch.get("n_resolved"),
        code,
        extra={"exit_code": code, "run_dir": report.run_dir, "n_suspicious": n_susp},
    )
    if code == EXIT_FINDINGS and cfg.nightly.notify_command:
        notify(
            cfg.nightly.notify_command,
            summary_path,
            env={
                "SPRAY_RUN_ID": report.run_id,
                "SPRAY_RUN_DIR": report.run_dir,
                "SPRAY_EXIT_CODE": str(code),
                "SPRAY_REPORT_HTML": str(report_html) if report_html.exists() else "",
            },
        )
    return code


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def register_cli(subparsers: Any) -> None:
    """Add ``spray run`` to the ``spray`` command."""
    from spray.cli import add_audit_arguments

    p = subparsers.add_parser(
        "run",
        help="the scheduled audit: idempotent, incremental, resumable, locked (exit 0/10/1/2/75)",
        description=(cmd_run.__doc__ or "")
        + " Exit codes: 0 ok (or up to date); 10 ok with new or grown suspicious clusters since the previous "
        "run (any suspicious cluster with --fail-on-findings); 1 failure; 2 config error; 75 another run "
        "holds the lock.",
    )
    add_audit_arguments(p)
    p.add_argument("--keep-runs", type=_positive_int, help="override output.keep_runs (retention)")
    p.add_argument(
        "--fail-on-findings",
        action="store_true",
        help="exit 10 when any cluster is suspicious, not only new or grown ones (also nightly.fail_on_findings)",
    )
    p.add_argument(
        "--log-format",
        choices=["json", "text"],
        default="json",
        help="stderr log format (default json: one JSON object per line with run_id and stage)",
    )
    p.add_argument(
        "--progress", action="store_true", help="show progress bars (off by default for schedulers)"
    )
    p.add_argument(
        "--status-file",
        help="also write the final one-line JSON status here (torchrun turns exit codes into 1; read this instead)",
    )
    p.set_defaults(func=cmd_run)
