"""Test data that carries the shortcut: its images of the artifact class that project along the artifact
direction as the flagged ones do are counted, and the correction's report warns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from spray.cli import main
from spray.correct.lookalikes import Lookalikes
from spray.data import write_idx
from tests.faults.cli import run_main
from tests.test_correct_world import TARGET, World, build_world, make_images


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> World:
    world = build_world(tmp_path_factory.mktemp("lookalikes"))
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    return world


def _correct_with_test_data(
    world: World, images: np.ndarray, labels: np.ndarray, name: str, capsys: pytest.CaptureFixture[str]
) -> tuple[str, dict]:
    write_idx(world.root / f"{name}-images.idx", images)
    write_idx(world.root / f"{name}-labels.idx", labels.astype(np.uint8))
    raw = yaml.safe_load(world.config.read_text())
    raw["correction"]["test_data"] = {
        "kind": "idx",
        "images": f"{name}-images.idx",
        "labels": f"{name}-labels.idx",
    }
    cfg = world.root / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    res = run_main(["correct", "--config", str(cfg), "--method", "pclarc", "--no-reaudit"], capsys)
    assert res.code == 0, res.output
    record = json.loads(next((world.runs_dir / "corrections").glob("*/correction.json")).read_text())
    for f in (world.runs_dir / "corrections").glob("*/correction.json"):  # the newest, for this test data
        data = json.loads(f.read_text())
        if data["parameters"]["test_data"]["images"].endswith(f"{name}-images.idx"):
            record = data
    return res.output, record


def test_test_data_carrying_the_shortcut_is_said(audited: World, capsys: pytest.CaptureFixture[str]) -> None:
    """An outside check: test images of the artifact class carried the stamp too; the corrected model lost
    them, and the clean accuracy fell as the correction worked, with no word that the test data was stamped."""
    images, labels, planted = make_images(seed=1)
    out, rec = _correct_with_test_data(audited, images, labels, "stamped", capsys)
    like = rec["evaluation"]["lookalikes"]
    n_class = int((labels == TARGET).sum())
    # the class's images among the clean accuracy's (correction.eval_max_samples: 200 of 240), 40 % stamped
    assert 0.6 * n_class <= like["n_checked"] <= n_class
    assert like["n_like"] >= 0.3 * like["n_checked"] and like["reference_rate"] < 0.2, like
    stamped_ids = {str(i) for i in np.flatnonzero(planted)}
    assert len(set(like["sample_ids"]) & stamped_ids) >= 0.9 * len(like["sample_ids"]), like
    assert "the test data seems to carry the shortcut" in out and "evaluation.lookalikes.sample_ids" in out
    # the same test data without the stamped images: counted, not warned about
    out, rec = _correct_with_test_data(audited, images[~planted], labels[~planted], "clean", capsys)
    assert 0 < rec["evaluation"]["lookalikes"]["n_checked"] <= int((labels[~planted] == TARGET).sum())
    assert "the test data seems to carry the shortcut" not in out


def test_the_binomial_test_takes_the_reference_rate_with_a_floor() -> None:
    assert Lookalikes(40, 2, 0.05, 40).p_value() > 0.1  # as many as unflagged images reach
    assert Lookalikes(40, 20, 0.05, 40).p_value() < 1e-6
    # no reference image past the midpoint: the rate is taken as one in n_reference + 1, not 0
    assert Lookalikes(40, 1, 0.0, 9).p_value() > 0.01
    assert Lookalikes(0, 0, 0.0, 9).p_value() == 1.0
