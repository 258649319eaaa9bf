"""The example configs for modern architectures run end to end (``spray audit``), on a few samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.faults.cli import run_main

REPO = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.exists(), reason="needs Debian's dataset-fashion-mnist")
@pytest.mark.parametrize("name", ["example_timm_convnext.yaml", "example_efficientnet.yaml"])
def test_example_config_audits(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if "timm" in name:
        pytest.importorskip("timm")
    config = yaml.safe_load((REPO / "configs" / name).read_text())
    config["data"]["limit"] = 60  # the pipeline, not the findings, is under test
    config["output"]["runs_dir"] = str(tmp_path / "runs")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    result = run_main(["audit", "--config", str(path), "-q"], capsys)
    assert result.code in (0, 10), result.output
    assert "Traceback" not in result.output
    assert len(list((tmp_path / "runs").glob("2*"))) == 1  # a published run
