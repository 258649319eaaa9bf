"""The owner of the runs folder: its layout, the caches, publishing, the writer, the reader, and the
change detector between runs.

- :mod:`spray.runs.layout` names every file and folder (and :data:`~spray.runs.layout.LAYOUT_VERSION`);
- :mod:`spray.runs.atomic` writes them atomically, :mod:`spray.runs.locking` locks the folder;
- :mod:`spray.runs.identity` hashes what a run and a cache directory depend on;
- :mod:`spray.runs.cache` holds the per-sample LRP results and the paste test's predictions;
- :mod:`spray.runs.writer` writes a run, :mod:`spray.runs.reader` (with :mod:`spray.runs.summary`) reads
  it, :mod:`spray.runs.keys` parses its cluster keys, :mod:`spray.runs.publish` publishes, finds and
  prunes runs;
- :mod:`spray.runs.changes` says what changed since a previous run.

``docs/run_layout.md`` documents the files.
"""
