"""Exit codes of the ``spray`` command, what schedulers act on."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
#: ok, with new or grown suspicious clusters since the previous run (or any, with --fail-on-findings)
EXIT_FINDINGS = 10
#: another run holds the runs directory's lock
EXIT_LOCKED = 75
#: stopped by SIGINT (Ctrl-C)
EXIT_INTERRUPTED = 130
#: stopped by SIGTERM (a scheduler's stop): finished shards are kept, nothing is published
EXIT_TERMINATED = 143
