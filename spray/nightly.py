"""``spray run``: the nightly job — idempotent, incremental, resumable, locked, scalable with torchrun.

One command that cron, a systemd timer, a Kubernetes CronJob, an Airflow ``BashOperator`` or
``prefect shell serve`` call unchanged (examples in ``pipelines/``)::

    spray run --config audit.yaml   (the command itself: spray/cli/run.py)
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

import json
import logging
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from spray.exit_codes import EXIT_FINDINGS, EXIT_OK

log = logging.getLogger(__name__)

# Cluster matching across runs. Cluster ids are arbitrary per run, so a cluster is recognised by its
# members (Jaccard of sample ids: robust while the data mostly stays) or, when many members changed, by
# what the model looks at (Pearson correlation of the mean heatmaps).
JACCARD_MIN = 0.3
CORRELATION_MIN = 0.8
# A matched cluster has "grown" when it gained at least this fraction of its previous members: adding 5 %
# new data grows every cluster by about 5 %, which is not news.
GROW_MIN = 0.1


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
