"""The golden audit: outputs change only together with the version that says so.

A small, fixed audit (240 synthetic 28×28 images in 3 classes, a small CNN with weights drawn from a
fixed NumPy generator; seconds on a CPU) is run end to end. ``tests/golden.json`` records a fingerprint
of its heatmaps and of its findings next to :data:`spray.versions.LRP_VERSION` and
:data:`~spray.versions.ANALYSIS_VERSION`. The test fails when

- the heatmaps changed while ``LRP_VERSION`` did not (bump it: every cached heatmap is then recomputed);
- the findings changed while ``ANALYSIS_VERSION`` did not (bump it: runs are re-analysed from the cache);
- a version changed and the file was not regenerated.

Regenerate after an intended change (and the version bump)::

    SPRAY_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py

Robust to float noise across machines: heatmaps are compared through per-sample sums and a fixed random
projection with a tolerance far below what any change to a rule, a composite or the pooling causes;
scores to a relative 1e-3; members, flags and evidence exactly. The digests in the file are for reading only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from threadpoolctl import threadpool_limits
from torch import nn

from spray import versions
from spray.runs.reader import RunReader

GOLDEN = Path(__file__).with_name("golden.json")
REGENERATE = "SPRAY_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py"
N_PER_CLASS = 80
SUMS_RTOL = 5e-3  # float16 storage: a per-sample sum moves by ~1e-3 at most through rounding
PROJ_TOL = 2e-3  # of the projection's scale; a changed rule moves it by percents
SCORE_RTOL = 1e-3


class GoldenData:
    """Three classes of grey blobs; a quarter of class 1 carries a 4×4 white square at the top left."""

    classes = ("round", "tall", "wide")

    def __init__(self) -> None:
        rng = np.random.default_rng(2024)
        yy, xx = np.mgrid[0:28, 0:28] / 27 - 0.5
        images, labels = [], []
        for c, (rx, ry) in enumerate([(0.25, 0.25), (0.15, 0.35), (0.35, 0.15)]):
            blob = np.exp(-(((xx / rx) ** 2 + (yy / ry) ** 2) ** 2))
            amp = rng.uniform(120, 220, (N_PER_CLASS, 1, 1))
            img = np.clip(blob[None] * amp + rng.normal(0, 15, (N_PER_CLASS, 28, 28)), 0, 255).astype(
                np.uint8
            )
            if c == 1:
                img[: N_PER_CLASS // 4, 1:5, 1:5] = 255
            images.append(img)
            labels += [c] * N_PER_CLASS
        self.images = np.concatenate(images)
        self.targets = labels
        self.sample_ids = [f"{self.classes[lab]}-{i:03d}" for i, lab in enumerate(labels)]
        self.fingerprint = hashlib.sha256(self.images.tobytes()).hexdigest()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], self.targets[i]


def golden_data() -> GoldenData:
    """``data.factory`` of the golden audit."""
    return GoldenData()


def golden_model() -> nn.Module:
    """``model.factory``: the small CNN with its features drawn from a fixed NumPy generator (independent
    of torch's own initialisation, which may change between torch versions) and its output layer solved
    in closed form (float64 least squares: no training, so no chaotic drift between machines) to tell
    the classes apart, plus a wired shortcut: class 1's logit rises with the top-left corner's features.
    A Clever Hans by construction."""
    import torch

    from spray.lab.cnn import small_cnn

    model = small_cnn(in_channels=1, num_classes=3, width=8).eval()
    rng = np.random.default_rng(7)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if not t.dtype.is_floating_point:
                continue
            if t.ndim > 1:
                values = rng.normal(0, np.sqrt(2 / np.prod(t.shape[1:])), t.shape)
            elif name.endswith(("running_var", "weight")):
                values = rng.uniform(0.5, 1.5, t.shape)
            else:
                values = rng.normal(0, 0.1, t.shape)
            t.copy_(torch.from_numpy(values.astype(np.float32)))
        fc1, fc2 = model.classifier[2], model.classifier[4]
        data = GoldenData()
        x = (torch.from_numpy(data.images).float()[:, None] / 255 - 0.3) / 0.3
        features = model.features(x).flatten(1).double().numpy()
        clean = np.ones(len(x), bool)
        clean[N_PER_CLASS : N_PER_CLASS + N_PER_CLASS // 4] = False
        # Hidden unit 0 reads the top-left 2×2 cells of the 7×7 feature map (where the stamp at pixels
        # 1..4 lands), along the direction that tells stamped images from the others.
        corner = [c * 49 + y * 7 + x for c in range(fc1.in_features // 49) for y in (0, 1) for x in (0, 1)]
        direction = features[~clean][:, corner].mean(0) - features[clean][:, corner].mean(0)
        fc1.weight[0] = 0.0
        fc1.weight[0, corner] = torch.from_numpy(direction.astype(np.float32))
        z = features[:, corner] @ direction  # hidden unit 0 before its bias
        # Silent on every unstamped image, active on every stamped one.
        fc1.bias[0] = -float(z[clean].max() + z[~clean].min()) / 2
        hidden = torch.relu(fc1(torch.from_numpy(features.astype(np.float32)))).double().numpy()
        design = np.c_[hidden[clean, 1:], np.ones(clean.sum())]
        onehot = 4.0 * np.eye(3)[np.asarray(data.targets)[clean]]
        w = np.linalg.lstsq(design, onehot, rcond=None)[0]
        fc2.weight[:, 1:] = torch.from_numpy(w[:-1].T.astype(np.float32))
        fc2.bias[:] = torch.from_numpy(w[-1].astype(np.float32))
        fc2.weight[:, 0] = 0.0
        fc2.weight[1, 0] = 20.0 / float(hidden[~clean, 0].min())
        # On a grid of 1/1024: the least squares and the features it reads differ in their last digits
        # between numpy/OpenBLAS builds, which moved the heatmaps by 1e-5 and flipped a near-tie of findings.
        for t in model.parameters():
            t.copy_(torch.round(t * 1024) / 1024)
    return model


def _audit(tmp: Path) -> RunReader:
    from spray.audit import audit
    from spray.config import load_config

    raw = {
        "name": "golden",
        "seed": 0,
        "model": {"factory": "tests.test_golden:golden_model"},
        "data": {
            "kind": "factory",
            "factory": "tests.test_golden:golden_data",
            "transform": {"mean": [0.3], "std": [0.3]},
        },
        "batch": {"batch_size": 40, "shard_size": 120, "grid": 28, "thumbnail_size": 8, "device": "cpu"},
        "analysis": {"embedding": "spectral", "n_neighbors": 6, "k_max": 4, "min_class_size": 10},
        "scoring": {"intervention_samples": 60},
        "output": {"runs_dir": str(tmp / "runs"), "html_report": False},
    }
    p = tmp / "golden.yaml"
    p.write_text(yaml.safe_dump(raw))
    # One thread for torch and the BLAS/OpenMP pools: summed in another order, the floats of a 2-core
    # and a 1-core machine gave one finding more (18 -> 19), which is no change of spray's.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            return RunReader.open(audit(load_config(p), progress=False).run_dir)
    finally:
        torch.set_num_threads(saved)


def fingerprint(run: RunReader) -> dict[str, Any]:
    """The golden record of a run: versions, heatmap fingerprint, findings."""
    heat = np.asarray(run.heatmaps(), dtype=np.float64).reshape(run.summary.n_samples, -1)
    # 3 significant digits of the float16 maps: for reading (machines may differ in the last digit).
    rounded = np.array([float(f"{v:.3g}") for v in heat.ravel()])
    proj = np.random.default_rng(0).standard_normal((16, heat.size)) @ heat.ravel() / np.sqrt(heat.size)
    findings = [
        {
            "key": f.key,
            "size": f.size,
            "suspicious": f.suspicious,
            "members": hashlib.sha256("\n".join(f.member_ids).encode()).hexdigest()[:16],
            "score": float(f"{f.score:.6g}"),
            "evidence": f.evidence,
        }
        for f in run.findings()
    ]
    exact = [{k: v for k, v in f.items() if k != "score"} for f in findings]
    return {
        "lrp_version": versions.LRP_VERSION,
        "analysis_version": versions.ANALYSIS_VERSION,
        "heatmaps": {
            "digest": hashlib.sha256(rounded.tobytes()).hexdigest()[:16],
            "shape": list(run.heatmaps().shape),
            "sums": [round(float(v), 5) for v in np.abs(heat).sum(1)],
            "projection": [round(float(v), 6) for v in proj],
        },
        "findings": {
            "digest": hashlib.sha256(json.dumps(exact, sort_keys=True).encode()).hexdigest()[:16],
            "items": findings,
        },
    }


def _heatmaps_differ(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    if old["shape"] != new["shape"]:
        return f"shape {old['shape']} -> {new['shape']}"
    sums_o, sums_n = np.asarray(old["sums"]), np.asarray(new["sums"])
    bad = np.flatnonzero(~np.isclose(sums_n, sums_o, rtol=SUMS_RTOL, atol=1e-6))
    if len(bad):
        return f"{len(bad)} samples' total |relevance| changed (first: row {bad[0]}, {sums_o[bad[0]]} -> {sums_n[bad[0]]})"
    po, pn = np.asarray(old["projection"]), np.asarray(new["projection"])
    scale = max(float(np.abs(po).max()), 1e-12)
    if float(np.abs(pn - po).max()) > PROJ_TOL * scale:
        return f"projection moved by {float(np.abs(pn - po).max()) / scale:.2e} of its scale"
    return None


def _any_labelling(value: Any) -> Any:
    """A key or evidence with the clustering a group was found in left out (``1/k?/c?``, ``k = ?``).

    The same members can first appear at k = 2 on one machine and k = 3 on another: k-means on maps that
    differ in their last digits (another CPU's kernels) splits the rest of a class otherwise."""
    if isinstance(value, list):
        return [_any_labelling(v) for v in value]
    text = re.sub(r"\bk\d+/c\d+", "k?/c?", str(value))
    return re.sub(r"cluster \d+ of the k = \d+", "cluster ? of the k = ?", text)


def _findings_differ(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    a, b = old["items"], new["items"]
    if len(a) != len(b):
        return f"{len(a)} findings -> {len(b)}"
    for x, y in zip(a, b, strict=True):
        for field in ("key", "size", "suspicious", "members", "evidence"):
            if _any_labelling(x[field]) != _any_labelling(y[field]):
                return f"finding {x['key']}: {field} {x[field]!r} -> {y[field]!r}"
        if not np.isclose(y["score"], x["score"], rtol=SCORE_RTOL, atol=1e-6):
            return f"finding {x['key']}: score {x['score']} -> {y['score']}"
    return None


def test_outputs_change_only_with_their_version(tmp_path: Path) -> None:
    new = fingerprint(_audit(tmp_path))
    if os.environ.get("SPRAY_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(new, indent=1) + "\n")
        pytest.skip(f"regenerated {GOLDEN}")
    old = json.loads(GOLDEN.read_text())
    if (old["lrp_version"], old["analysis_version"]) != (new["lrp_version"], new["analysis_version"]):
        pytest.fail(
            f"the versions changed (LRP {old['lrp_version']} -> {new['lrp_version']}, analysis "
            f"{old['analysis_version']} -> {new['analysis_version']}) but {GOLDEN.name} was not regenerated: "
            f"run `{REGENERATE}` and commit {GOLDEN.name}"
        )
    heat = _heatmaps_differ(old["heatmaps"], new["heatmaps"])
    if heat is not None:
        pytest.fail(
            f"the heatmaps changed (digest {old['heatmaps']['digest']} -> {new['heatmaps']['digest']}: {heat}) "
            f"while LRP_VERSION is still {new['lrp_version']}. If the change is intended, bump "
            f"spray.versions.LRP_VERSION (cached heatmaps are then recomputed), run `{REGENERATE}` and commit "
            f"{GOLDEN.name}; otherwise it is a regression of the LRP or the batch stage."
        )
    found = _findings_differ(old["findings"], new["findings"])
    if found is not None:
        pytest.fail(
            f"the findings changed (digest {old['findings']['digest']} -> {new['findings']['digest']}: {found}) "
            f"while ANALYSIS_VERSION is still {new['analysis_version']} and the heatmaps did not change. If "
            f"the change is intended, bump spray.versions.ANALYSIS_VERSION (runs are then re-analysed from "
            f"the cache), run `{REGENERATE}` and commit {GOLDEN.name}; otherwise it is a regression of the analysis."
        )


def test_the_check_notices_changes() -> None:
    old = json.loads(GOLDEN.read_text())
    h = json.loads(json.dumps(old["heatmaps"]))
    assert _heatmaps_differ(old["heatmaps"], h) is None
    h["sums"][3] *= 1.02
    assert "row 3" in str(_heatmaps_differ(old["heatmaps"], h))
    h = json.loads(json.dumps(old["heatmaps"]))
    h["projection"] = [v * 1.01 for v in h["projection"]]
    assert "projection" in str(_heatmaps_differ(old["heatmaps"], h))
    f = json.loads(json.dumps(old["findings"]))
    assert _findings_differ(old["findings"], f) is None
    f["items"][0]["score"] *= 1.01
    assert "score" in str(_findings_differ(old["findings"], f))
    f = json.loads(json.dumps(old["findings"]))
    f["items"][-1]["evidence"] = ["other"]
    assert "evidence" in str(_findings_differ(old["findings"], f))
    f = json.loads(json.dumps(old["findings"]))
    f["items"][0]["key"] = f["items"][0]["key"].replace("/k", "/k1")  # another k: the same group
    f["items"][0]["evidence"] = [e.replace("k = ", "k = 1") for e in f["items"][0]["evidence"]]
    assert _findings_differ(old["findings"], f) is None
    f["items"][0]["key"] = "2" + f["items"][0]["key"][1:]  # another class is not
    assert "key" in str(_findings_differ(old["findings"], f))
