"""A class is analysed in an order of its contents (spray.analysis_shards.class_rows): the same images listed in
another order give the same findings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from spray.analysis_shards import AnalysisInputs, class_rows

DIGITS = '''
import numpy as np
from sklearn.datasets import load_digits


class Digits:
    """Digits 0-2 of scikit-learn's set, listed in the order a seed shuffles them to; ids and contents fixed."""

    classes = ["zero", "one", "two"]

    def __init__(self, seed):
        d = load_digits()
        keep = np.flatnonzero(d.target < 3)[:240]
        order = np.random.default_rng(seed).permutation(len(keep)) if seed else np.arange(len(keep))
        self.images = (d.images[keep][order] * 15).astype(np.uint8)
        self.targets = d.target[keep][order].tolist()
        self.sample_ids = [f"d{i}" for i in keep[order]]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def build(seed=0):
    return Digits(seed)
'''


def test_class_rows_follow_content_not_position() -> None:
    inputs = AnalysisInputs(["a", "b", "c", "d"], ["h3", "h1", "h2", "h1"], np.zeros(4), np.zeros(4), None)
    groups = np.array([0, 0, 1, 0])
    assert class_rows(inputs, groups, 0).tolist() == [1, 3, 0]  # h1 (b), h1 (d), h3 (a)
    assert class_rows(inputs, groups, 1).tolist() == [2]


def test_the_same_images_in_another_order_give_the_same_findings(tmp_path: Path) -> None:
    """An outside check: the same samples with the same ids, only listed in another order (renamed files, a
    reordered dataset), kept 64 of 138 candidates' member sets and gave a flagged cluster another key (k 12 -> 11):
    k-means' seeding and the resampled rows were drawn by position in the dataset's order."""
    from spray.audit import audit
    from spray.config import load_config
    from spray.lab.cnn import small_cnn
    from spray.runs.reader import RunReader

    (tmp_path / "digits_ds.py").write_text(DIGITS)
    torch.manual_seed(0)
    torch.save(small_cnn(in_channels=1, num_classes=3).state_dict(), tmp_path / "w.pt")
    found = []
    for seed in (0, 1):
        raw = {
            "name": "order",
            "model": {
                "factory": "spray.lab.cnn:small_cnn",
                "factory_kwargs": {"in_channels": 1, "num_classes": 3},
                "checkpoint": "w.pt",
            },
            "data": {"kind": "factory", "factory": "digits_ds:build", "factory_kwargs": {"seed": seed},
                     "transform": {"resize": 28}},
            "batch": {"batch_size": 64, "grid": 7, "thumbnail_size": 8, "device": "cpu"},
            "analysis": {"embedding": "spectral", "k_max": 6},
            "scoring": {"intervention_samples": 8},
            "concepts": {"enabled": False},
            "output": {"runs_dir": f"runs{seed}", "html_report": False},
        }  # fmt: skip
        (tmp_path / f"a{seed}.yaml").write_text(yaml.safe_dump(raw))
        report = audit(load_config(tmp_path / f"a{seed}.yaml"), progress=False)
        run = RunReader.open(report.run_dir)
        scores = run.samples().set_index("sample_id")["score"].sort_index()
        findings = sorted(
            (f.key, frozenset(f.member_ids), round(f.score, 6), f.suspicious) for f in report.findings
        )
        # the check of the logit share probes images spread over the contents too (an outside check: its
        # shares moved with file order)
        found.append((findings, scores, run.summary.extra["conservation"]))
    assert len(found[0][0]) > 20
    assert found[0][0] == found[1][0]
    assert np.allclose(found[0][1].to_numpy(), found[1][1].to_numpy(), atol=1e-6, equal_nan=True)
    assert found[0][2] == found[1][2]
