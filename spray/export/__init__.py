"""Export a published run into the file formats of other tools, one module per target.

- :mod:`spray.export.virelay`: a ViRelAy project (``project.yaml``, label map, HDF5 dataset, attributions
  and analyses) that ``virelay project.yaml`` opens;
- :mod:`spray.export.fiftyone`: a FiftyOne dataset folder (``samples.json``, ``metadata.json``, images)
  with per-sample fields for cluster, suspicion and flag.

Both read the run read-only through :mod:`spray.export.source` and write into a private staging folder
that is renamed into place at the end, so an interrupted export never leaves a half-written folder that
looks complete. ``spray export TARGET RUN -o OUT`` is the command (:mod:`spray.cli.export`).
"""

from spray.export.source import ExportSource, open_source, staged_output

__all__ = ["ExportSource", "open_source", "staged_output"]
