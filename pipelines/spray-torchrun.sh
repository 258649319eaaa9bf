#!/usr/bin/env bash
# Run `spray run` under torchrun and exit with spray's own exit code.
#
# torchrun reports any non-zero worker exit as 1, which would turn "new findings" (10) and "locked" (75)
# into "failure". Rank 0 writes the real code into --status-file; this wrapper returns it.
#
#   pipelines/spray-torchrun.sh NPROC --config audit.yaml [more spray run options]
set -uo pipefail
nproc="$1"; shift
status="$(mktemp -t spray-status.XXXXXX)"
trap 'rm -f "$status"' EXIT
torchrun --standalone --nproc_per_node="$nproc" -m spray.cli run --status-file "$status" "$@"
rc=$?
if [[ -s "$status" ]]; then
    # rank 0 has printed the status line already: only its exit code is taken from the file
    exit "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["exit_code"])' "$status")"
fi
exit "$rc"
