"""Airflow DAG: the spray audit as one BashOperator task (Airflow 2.6+).

- Exit 75 (another spray run holds the lock) marks the task *skipped*, not failed.
- Exit 10 (new or grown suspicious clusters) and 1/2 fail the task, so the usual failure alerting
  (``email_on_failure``, ``on_failure_callback``) fires. ``retries`` is 0 on purpose: a retry of a 10
  would answer "up to date" (0) and turn the task green; a crashed run is resumed, not redone, by the
  next scheduled run or by clearing the task.
- The last stdout line is the JSON status (run dir, counts, exit code), pushed to XCom.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

with DAG(
    dag_id="spray_nightly",
    schedule="15 2 * * *",
    start_date=datetime(2025, 1, 1),
    catchup=False,  # one run per night; a skipped night is covered by the next (the cache makes it cheap)
    max_active_runs=1,
    default_args={"owner": "ml-audit", "retries": 0, "email_on_failure": True},
    tags=["spray", "audit"],
) as dag:
    BashOperator(
        task_id="spray_run",
        bash_command="/srv/spray/.venv/bin/spray run --config /etc/spray/audit.yaml",
        skip_on_exit_code=[75],
        do_xcom_push=True,
        execution_timeout=timedelta(hours=12),
    )
