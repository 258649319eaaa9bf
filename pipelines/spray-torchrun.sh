#!/usr/bin/env bash
# Run `spray run` under torchrun and exit with spray's own exit code.
#
# torchrun reports any non-zero worker exit as 1, which would turn "new findings" (10) and "locked" (75)
# into "failure". Rank 0 writes the real code into --status-file; this wrapper returns it.
#
#   pipelines/spray-torchrun.sh NPROC --config audit.yaml [more spray run options]
set -uo pipefail
nproc="$1"; shift
# The user's own --status-file is the one rank 0 writes (argparse takes the last one given): read that one,
# and keep it; otherwise a temporary file of the wrapper's.
status=""
prev=""
for arg in "$@"; do
    [[ "$prev" == "--status-file" ]] && status="$arg"
    [[ "$arg" == --status-file=* ]] && status="${arg#--status-file=}"
    prev="$arg"
done
# The venv's torchrun when this checkout has one (a cron job need not activate it), else the one on PATH.
here="$(cd "$(dirname "$0")/.." && pwd)"
runner="torchrun"
[[ -x "$here/.venv/bin/torchrun" ]] && runner="$here/.venv/bin/torchrun"
runner="${SPRAY_TORCHRUN:-$runner}"  # another launcher, by path
# The Python next to that torchrun reads the status file (a cron job's PATH may have no python3).
python="$(dirname "$(command -v "$runner" || echo "$runner")")/python"
[[ -x "$python" ]] || python="$(command -v python3 || command -v python || echo python3)"
extra=()
if [[ -n "$status" ]] && "$python" - "$status" <<'PY'
import json, socket, sys
try:  # spray.cli.rank_status.held_by_another_job's rule: a live spray process of this host
    said = json.load(open(sys.argv[1]))
    mine = said.get("status") == "running" and said.get("host") == socket.gethostname()
    alive = mine and b"spray" in open(f"/proc/{int(said['pid'])}/cmdline", "rb").read()
except Exception:
    alive = False
sys.exit(0 if alive else 1)
PY
then
    # another job is running with this status file (and holds the lock): this one would be locked out, and
    # emptying the file would lose that job's outcome
    echo "spray-torchrun: --status-file $status belongs to a running spray job; nothing started" >&2
    exit 75
fi
if [[ -n "$status" ]] && ! "$python" - "$status" <<'PY'
import json, os, sys
# spray.cli.rank_status.status_file_problem's rule: only an empty file or an earlier status record is replaced
path = sys.argv[1]
fix = "pass the path of a new file or of an earlier status file"
if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
    sys.exit(f"spray-torchrun: --status-file {path}: its folder does not exist: create it or {fix}")
if os.path.isdir(path):
    sys.exit(f"spray-torchrun: --status-file {path} is a folder: {fix}")
try:
    said = json.load(open(path, "rb")) if os.path.getsize(path) else {"exit_code": 0, "status": ""}
except FileNotFoundError:
    said = {"exit_code": 0, "status": ""}
except Exception:
    said = None
if not (isinstance(said, dict) and "exit_code" in said and "status" in said):
    sys.exit(f"spray-torchrun: --status-file {path} exists and is not a spray status record: not overwritten; {fix}")
PY
then
    exit 2
fi
if [[ -n "$status" ]]; then
    # emptied first: a torchrun or worker that fails before rank 0 writes "running" must not leave the
    # previous run's exit code there for this wrapper to return
    : > "$status" || { echo "spray-torchrun: cannot write --status-file $status" >&2; exit 2; }
    rm -f "$status".rank*
else
    status="$(mktemp -t spray-status.XXXXXX)"
    trap 'rm -f "$status" "$status".rank*' EXIT
    extra=(--status-file "$status")
fi
# In the background, with the stop signals passed on: a SIGTERM to this wrapper alone (a scheduler's stop, or
# this script run as PID 1 in a container) must stop the job, not orphan it (it went on, published and
# exited 10 with nobody left to read it). SIGINT goes on as SIGTERM: a background job ignores SIGINT.
child=""
stopped=""
trap 'stopped=1; [[ -n "$child" ]] && kill -TERM "$child" 2>/dev/null' TERM INT HUP
"$runner" --standalone --nproc_per_node="$nproc" -m spray.cli run "${extra[@]}" "$@" &
child=$!
[[ -n "$stopped" ]] && kill -TERM "$child" 2>/dev/null  # a stop that came before the job had a pid
while :; do
    wait "$child"
    rc=$?
    # wait returns early (above 128) when a trapped signal arrives; the job is done once it is gone
    kill -0 "$child" 2>/dev/null || break
done
if (( rc > 128 )); then  # the signal's return, or the job's own: a job not yet reaped gives its own here
    wait "$child" 2>/dev/null
    last=$?
    (( last != 127 )) && rc=$last
fi
trap - TERM INT HUP
if [[ -s "$status" ]]; then
    # rank 0 has printed the status line already: only its exit code is taken from the file; a file that
    # still says "running" (exit_code null) means rank 0 was killed before it could write its outcome
    code="$("$python" -c 'import json,sys; c = json.load(open(sys.argv[1]))["exit_code"]; print("" if c is None else c)' "$status")"
    if [[ -n "$code" ]]; then
        exit "$code"
    fi
    echo "spray-torchrun: rank 0 ended without a final status (killed?); torchrun exited $rc" >&2
    exit $(( rc == 0 ? 1 : rc ))
fi
exit "$rc"
