"""spray on a CUDA device: the LRP engine against zennit, the precisions, and the audit against CPU.

Skipped where no CUDA device is visible (CI, the 2-core development machine). On a GPU machine::

    python -m pytest tests/test_cuda.py -q

The zennit reference is computed on the CPU in float32 (as in ``tests/test_lrp.py``), so these tests
check the CUDA path of every rule, canonizer and the fused kernels against an independent
implementation on another device, not just CUDA against itself.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from spray.audit import audit  # noqa: E402
from spray.config import load_config  # noqa: E402
from spray.data import build_dataset  # noqa: E402
from spray.lab.demo import GroundTruth, prepare_demo, score_against_truth  # noqa: E402
from spray.lrp import Explainer  # noqa: E402
from spray.models import build_model  # noqa: E402
from tests.test_lrp import (  # noqa: E402
    CASES,
    MODELS,
    _inputs,
    _kwargs,
    _model,
    _pair,
    _zennit,
    zcan,
)


@pytest.mark.parametrize(("model_name", "composite"), CASES)
def test_cuda_fp32_matches_zennit(model_name: str, composite: str) -> None:
    cpu, ref = _pair(model_name, composite)  # spray on CPU, zennit on CPU
    model, x = _model(model_name), _inputs(model_name)
    ours = Explainer(model, composite, composite_kwargs=_kwargs(composite), device="cuda", precision="fp32")(
        x.cuda()
    )
    assert ours.relevance.device.type == "cuda" and ours.relevance.dtype == torch.float32
    assert torch.equal(ours.targets.cpu(), cpu.targets.cpu())
    # The user's model is not moved to the GPU by explaining it there.
    assert next(model.parameters()).device.type == "cpu"
    got = ours.relevance.cpu()
    cos = nn.functional.cosine_similarity(got.flatten(1), ref.flatten(1), dim=1)
    assert bool((cos >= 0.9999).all()), cos.tolist()
    # Float32 on another device sums in another order. The tolerance is zennit's own CPU-vs-CUDA
    # difference (its reference run on the GPU in strict float32), or 1e-4 of the scale if larger: a
    # wrong rule or canonizer is off by orders of magnitude more.
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        ref_gpu = _zennit(
            copy.deepcopy(model).cuda(), x.cuda(), composite, cpu.targets.cuda(), MODELS[model_name][2]()
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    scale = float(ref.abs().max())
    zennit_gap = float((ref_gpu.cpu() - ref).abs().max())
    err = float((got - ref).abs().max())
    assert err <= max(1e-4 * scale, 2.0 * zennit_gap), (err, zennit_gap, scale)


@pytest.mark.parametrize(("precision", "min_cos"), [("tf32", 0.999), ("bf16", 0.95)])
def test_cuda_reduced_precisions_roughly_agree(precision: str, min_cos: float) -> None:
    model, x = _model("resnet50"), _inputs("resnet50", batch=4)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    ref = Explainer(model, device="cuda", precision="fp32")(x.cuda()).relevance
    low = Explainer(model, device="cuda", precision=precision)(x.cuda()).relevance
    assert low.dtype == torch.float32 and bool(torch.isfinite(low).all())
    cos = nn.functional.cosine_similarity(low.flatten(1), ref.flatten(1), dim=1)
    assert bool((cos >= min_cos).all()), cos.tolist()
    # The TF32 switches are restored after the calls (each precision sets them only while explaining).
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("planted_cuda")
    return prepare_demo(work, work / "runs", per_class=120, epochs=3, seed=0)


def _demo_batch(planted: Path, n: int = 64) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    cfg = load_config(planted)
    ds = build_dataset(cfg.data)
    x = torch.stack([ds.load_input(i) for i in range(n)])
    labels = torch.tensor([int(ds.labels[i]) for i in range(n)])
    return build_model(cfg.model).eval(), x, labels


def _zennit_demo(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """zennit's EpsilonPlusFlat maps of the demo CNN (BatchNorm merged), float64 on the CPU."""
    return _zennit(model, x, "EpsilonPlusFlat", labels, [zcan.SequentialMergeBatchNorm()]).double().cpu()


def test_cuda_maps_are_as_close_to_float64_as_zennits(planted: Path) -> None:
    # A trained model (the demo's): on an H100, cuDNN's convolution algorithms put float32 LRP maps ~1 %
    # (of the map's scale) away from a float64 reference, zennit's as much as spray's; with cuDNN off
    # both are exact to 1e-5. spray must be no less exact than zennit on the same device.
    model, x, labels = _demo_batch(planted)
    ref = _zennit_demo(copy.deepcopy(model).double(), x.double(), labels)
    scale = float(ref.abs().max())

    def gap(t: torch.Tensor) -> float:
        return float((t.double().cpu() - ref).abs().max()) / scale

    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        zennit_gap = gap(_zennit_demo(copy.deepcopy(model).cuda(), x.cuda(), labels.cuda()))
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    ours = Explainer(model, device="cuda")(x.cuda(), target="label", labels=labels.cuda()).relevance
    assert gap(ours) <= max(1e-4, 2.0 * zennit_gap), (gap(ours), zennit_gap)
    assert gap(Explainer(model)(x, target="label", labels=labels).relevance) <= 1e-4  # CPU
    torch.backends.cudnn.enabled = False
    try:
        exact = Explainer(model, device="cuda")(x.cuda(), target="label", labels=labels.cuda()).relevance
    finally:
        torch.backends.cudnn.enabled = True
    assert gap(exact) <= 1e-4, gap(exact)


def test_audit_on_cuda_agrees_with_cpu(planted: Path, tmp_path: Path) -> None:
    reports = {}
    for device in ("cpu", "cuda"):
        cfg = load_config(planted)
        cfg.output.runs_dir = tmp_path / device
        cfg.batch.device = device
        cfg.analysis.embedding = "spectral"
        cfg.analysis.classes = [0, 6, 8]
        cfg.scoring.intervention_samples = 60
        reports[device] = audit(cfg, progress=False)
    cpu, gpu = reports["cpu"], reports["cuda"]
    assert gpu.timings["device"].startswith("cuda")
    h_cpu = np.load(Path(cpu.run_dir) / "heatmaps.npy").astype(np.float64)
    h_gpu = np.load(Path(gpu.run_dir) / "heatmaps.npy").astype(np.float64)
    assert h_cpu.shape == h_gpu.shape
    # Same samples in the same rows; maps within cuDNN's round-off (see the test above).
    assert float(np.abs(h_gpu - h_cpu).max()) <= 0.05 * float(np.abs(h_cpu).max())
    flat_c, flat_g = h_cpu.reshape(len(h_cpu), -1), h_gpu.reshape(len(h_gpu), -1)
    cos = (flat_c * flat_g).sum(1) / (np.linalg.norm(flat_c, axis=1) * np.linalg.norm(flat_g, axis=1))
    assert float(cos.min()) >= 0.995, float(cos.min())  # measured on an H100: 0.9986
    truth = GroundTruth.load(planted.parent)
    for report in (cpu, gpu):
        score = score_against_truth(report, truth)
        assert score.top_is_planted_class and score.f1 >= 0.8, score
    assert set(gpu.findings[0].member_ids) == set(cpu.findings[0].member_ids)
