"""Suite-wide setup: subprocesses the tests start write their temporary files into one folder removed at the end.

torchrun leaves an empty ``torchelastic_*`` log folder in the temporary directory per launch; without this the
suite left hundreds of them in ``/tmp``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_SUBPROCESS_TMP = "SPRAY_TEST_SUBPROCESS_TMPDIR"


def pytest_configure(config: pytest.Config) -> None:
    folder = tempfile.mkdtemp(prefix="spray-tests-")
    os.environ[_SUBPROCESS_TMP] = folder
    os.environ["TMPDIR"] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = os.environ.pop(_SUBPROCESS_TMP, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
