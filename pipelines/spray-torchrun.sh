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
extra=()
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
# The venv's torchrun when this checkout has one (a cron job need not activate it), else the one on PATH.
here="$(cd "$(dirname "$0")/.." && pwd)"
runner="torchrun"
[[ -x "$here/.venv/bin/torchrun" ]] && runner="$here/.venv/bin/torchrun"
runner="${SPRAY_TORCHRUN:-$runner}"  # another launcher, by path
# The Python next to that torchrun reads the status file (a cron job's PATH may have no python3).
python="$(dirname "$(command -v "$runner" || echo "$runner")")/python"
[[ -x "$python" ]] || python="$(command -v python3 || command -v python || echo python3)"
"$runner" --standalone --nproc_per_node="$nproc" -m spray.cli run "${extra[@]}" "$@"
rc=$?
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
