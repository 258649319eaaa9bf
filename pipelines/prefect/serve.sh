#!/usr/bin/env bash
# Serve `spray run` as a scheduled Prefect deployment (Prefect 2.16+/3.x). Keep this process running
# (e.g. under systemd or in a container); it starts a flow run every night at 02:15 UTC.
# A non-zero exit of spray (10 findings, 1 failure, 2 config, 75 locked) marks the flow run failed;
# the JSON status line and the JSON log are in the flow run's logs (--stream-stdout).
set -euo pipefail
exec prefect shell serve "/srv/spray/.venv/bin/spray run --config /etc/spray/audit.yaml" \
    --flow-name spray-nightly \
    --deployment-name spray-nightly \
    --cron-schedule "15 2 * * *" \
    --timezone UTC \
    --concurrency-limit 1 \
    --stream-stdout \
    --tag spray --tag audit
