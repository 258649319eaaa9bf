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


def test_vit_demo_prepares_a_config_that_builds_its_model(tmp_path: Path) -> None:
    """``spray demo --arch vit``: the prepared config rebuilds the trained TinyViT from its checkpoint
    (the full demo, which finds the planted cluster as finding #1, is documented in docs/lrp.md)."""
    import torch

    from spray.config import load_config
    from spray.lab.demo import prepare_demo
    from spray.lab.vit import TinyViT
    from spray.models import build_model

    cfg = load_config(prepare_demo(tmp_path, tmp_path / "runs", per_class=8, epochs=1, arch="vit"))
    assert cfg.model.factory == "spray.lab.vit:tiny_vit" and cfg.lrp.composite == "EpsilonPlusFlat"
    model = build_model(cfg.model)
    assert isinstance(model, TinyViT) and len(model.blocks) == 2
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_tiny_vit_matches_lxt() -> None:
    import torch

    from spray.lab.vit import tiny_vit
    from spray.lrp import Explainer
    from tests.lrp_oracles import lxt_reference
    from tests.test_lrp_architectures import _assert_close

    torch.manual_seed(0)
    model = tiny_vit(in_channels=1, num_classes=10, depth=2).eval()
    with torch.no_grad():
        model.class_token.normal_(std=0.5)
    x = torch.randn(2, 1, 28, 28)
    for composite, attention in (("AttnLRP", "attnlrp"), ("CPLRP", "cp")):
        ours = Explainer(model, composite, composite_kwargs={"epsilon": 1e-9})(x)
        _assert_close(ours.relevance, lxt_reference(model, x, ours.targets, attention))
