"""RR-ClArC: the penalty against its closed form, the cut-out head, training that resumes exactly, and the
corrected model's behaviour."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from spray.correct.rrclarc import rr_output, rr_penalty
from spray.correct.scope import set_scope
from spray.correct.split import check_head, head_after
from spray.correct.training import STATE_NAME, TrainingPlan, make_optimizer, train
from tests.test_correct_world import TinyCNN, to_input


def test_penalty_of_a_linear_head_is_its_weight_along_v() -> None:
    # y = W·flatten(a): ∂y_k/∂a = W_k whatever the input, so the penalties have closed forms in W_k.
    torch.manual_seed(0)
    head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4))
    a = torch.randn(6, 2, 3, 3, requires_grad=True)
    v = torch.randn(18)
    v = v / v.norm()
    out = rr_output(head(a), torch.zeros(6, dtype=torch.long), "artifact_class", 2)
    (g,) = torch.autograd.grad(out.sum(), a, create_graph=True)
    w = head[1].weight[2].view(2, 9)  # (channel, position)
    # a direction over the whole activation: (W·v)², or Σ_p (W_p·v_p)² per position
    assert torch.allclose(rr_penalty(g, v, "whole"), (head[1].weight[2] @ v) ** 2, atol=1e-6)
    assert torch.allclose(rr_penalty(g, v, "position"), ((w * v.view(2, 9)).sum(0) ** 2).sum(), atol=1e-6)
    # a channel direction: Σ_p (Σ_c W[c, p] v_c)², or the average over positions squared
    vc = torch.tensor([0.6, 0.8])
    assert torch.allclose(rr_penalty(g, vc, "position"), ((vc @ w) ** 2).sum(), atol=1e-6)
    assert torch.allclose(rr_penalty(g, vc, "whole"), (vc @ w.mean(1)) ** 2, atol=1e-6)
    # a flat layer
    flat = torch.randn(3, 5, requires_grad=True)
    lin = nn.Linear(5, 2)
    (gf,) = torch.autograd.grad(lin(flat)[:, 1].sum(), flat, create_graph=True)
    vf = torch.ones(5) / 5**0.5
    assert torch.allclose(rr_penalty(gf, vf, "position"), (lin.weight[1] @ vf) ** 2, atol=1e-6)


def test_the_penalty_on_tokens_sums_over_tokens_the_component_along_the_embedding() -> None:
    """An outside check: a ViT block's (B, N tokens, D) gradient was read as (B, C=N, P=D), so the
    per-position penalty summed over the embedding's D dimensions instead of the tokens, and penalised a
    gradient orthogonal to the direction (0.0151 where it is 0)."""
    torch.manual_seed(0)
    n_tok, dim = 5, 4
    v = torch.randn(n_tok * dim)
    v = v / v.norm()
    vt = v.view(n_tok, dim)
    g = torch.randn(3, n_tok, dim)
    # per token t, the component of its D-vector along v's D-vector at t: Σ_t (g_t · v_t)²
    want = ((g * vt).sum(2) ** 2).sum(1).mean()
    assert torch.allclose(rr_penalty(g, v, "position"), want, atol=1e-6)
    assert torch.allclose(rr_penalty(g, v, "whole"), ((g.flatten(1) @ v) ** 2).mean(), atol=1e-6)
    # a gradient orthogonal to v at every token is not penalised
    ortho = g - (g * vt).sum(2, keepdim=True) * vt / (vt * vt).sum(1, keepdim=True)
    assert float(rr_penalty(ortho, v, "position")) < 1e-10
    # a channel (embedding) direction: per token, the component along it
    vc = torch.randn(dim)
    vc = vc / vc.norm()
    assert torch.allclose(rr_penalty(g, vc, "position"), ((g @ vc) ** 2).sum(1).mean(), atol=1e-6)
    assert torch.allclose(rr_penalty(g, vc, "whole"), ((g.mean(1) @ vc) ** 2).mean(), atol=1e-6)


def test_penalty_is_differentiable_in_the_weights() -> None:
    head = nn.Linear(5, 3)
    a = torch.randn(4, 5, requires_grad=True)
    v = torch.tensor([1.0, 0, 0, 0, 0])
    (g,) = torch.autograd.grad(head(a)[:, 0].sum(), a, create_graph=True)
    rr_penalty(g, v, "position").backward()
    assert head.weight.grad is not None and head.weight.grad[0, 0] != 0


def test_rr_output_targets() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert torch.equal(rr_output(logits, torch.tensor([0, 2]), "label", 1), torch.tensor([1.0, 6.0]))
    assert torch.equal(rr_output(logits, torch.tensor([0, 2]), "artifact_class", 1), torch.tensor([2.0, 5.0]))
    torch.manual_seed(0)
    r = rr_output(logits, torch.tensor([0, 2]), "random_sign", 1)
    # a signed sum of the logits: every sign pattern gives a value with the parity of the logits' sum
    assert r.shape == (2,) and all(float(x) in {s1 * a + s2 * b + s3 * c for s1 in (-1, 1) for s2 in (-1, 1)
                                                 for s3 in (-1, 1) for a, b, c in [row.tolist()]}
                                   for x, row in zip(r, logits, strict=True))  # fmt: skip


def test_head_after_a_layer_shares_the_model_parameters() -> None:
    model = TinyCNN()
    head = head_after(model, "features")
    assert head is not None
    x = torch.randn(3, 1, 12, 12)
    assert check_head(model, head, "features", x)
    shared = {id(p) for p in model.parameters()}
    assert {id(p) for p in head.parameters()} <= shared
    assert {n for n, _ in head.named_parameters()} == {
        n for n, _ in model.named_parameters() if n.startswith("classifier")
    }
    # a cut inside a block whose output is used twice later is refused
    assert head_after(_Skip(), "body") is None


class _Skip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.body = nn.Conv2d(2, 2, 3, padding=1)
        self.out = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.out((self.body(s) + s).mean((2, 3)))


def test_scope_after_layer_trains_only_the_head() -> None:
    model = TinyCNN()
    model.features.append(nn.Dropout(0.5))  # a dropout before the layer's end must stay in eval mode
    scope = set_scope(model, "features", "after_layer", torch.randn(2, 1, 12, 12))
    assert scope.trained_modules == ["classifier.1", "classifier.3"]
    assert all(not p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    assert not model.features[-1].training and model.classifier[1].training
    assert scope.frozen_input


def test_scope_leaves_the_layers_the_user_froze_frozen(caplog: pytest.LogCaptureFixture) -> None:
    """An outside check: a factory froze a head layer (requires_grad False) and RR-ClArC trained it, unsaid."""
    model = TinyCNN()
    model.classifier[1].requires_grad_(False)
    with caplog.at_level(logging.WARNING):
        scope = set_scope(model, "features", "after_layer", torch.randn(2, 1, 12, 12))
    assert scope.trained_modules == ["classifier.3"] and "stay frozen: classifier.1" in caplog.text
    assert not any(p.requires_grad for p in model.classifier[1].parameters())
    # a model frozen as a whole (for inference) is no choice of layers: the scope trains as before
    whole = TinyCNN().requires_grad_(False)
    assert set_scope(whole, "features", "after_layer", torch.randn(2, 1, 12, 12)).trained_modules == [
        "classifier.1",
        "classifier.3",
    ]


def _toy_training(work: Path, stop_at: int | None) -> nn.Module:
    torch.manual_seed(123)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 2))
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 2, (40,), generator=g)

    def step(rows: np.ndarray, i: int) -> dict[str, torch.Tensor]:
        if stop_at is not None and i == stop_at:
            raise KeyboardInterrupt
        ce = nn.functional.cross_entropy(model(x[rows]), y[rows])
        return {"loss": ce, "ce": ce.detach()}

    plan = TrainingPlan(np.arange(40), epochs=3, batch_size=8, seed=7, checkpoint_every=4)
    opt = make_optimizer(list(model.parameters()), "adam", 1e-2, 0.9, 0.0)
    model.train()
    train(model, opt, plan, step, work, torch.device("cpu"), progress=False)
    return model


def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    straight = _toy_training(tmp_path / "a", None)
    with pytest.raises(KeyboardInterrupt):
        _toy_training(tmp_path / "b", 10)  # killed after the checkpoint of step 8
    assert (tmp_path / "b" / STATE_NAME).is_file()
    resumed = _toy_training(tmp_path / "b", None)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_a_full_disk_while_saving_the_training_state_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saving the training state on a full disk ended the correction with a raw OSError and left a temporary
    file beside the state; it is the runs folder's write error naming the file, and nothing is left behind."""
    import errno

    from spray.runs.errors import RunWriteError

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunWriteError, match=STATE_NAME):
        _toy_training(tmp_path, None)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_training_plan_batches_are_a_function_of_seed_and_step() -> None:
    plan = TrainingPlan(np.arange(10, 30), epochs=2, batch_size=6, seed=3, checkpoint_every=1)
    assert plan.steps_per_epoch == 4 and plan.total_steps == 8
    first = np.concatenate([plan.batch(s) for s in range(4)])
    assert sorted(first.tolist()) == list(range(10, 30))
    assert np.array_equal(plan.batch(5), TrainingPlan(np.arange(10, 30), 2, 6, 3, 1).batch(5))
    assert not np.array_equal(plan.batch(0), plan.batch(4))  # a new order every epoch


def test_rrclarc_step_removes_the_shortcut_of_the_tiny_model(tmp_path: Path) -> None:
    from tests.test_correct_world import flip_rate, make_images, train_tiny

    images, labels, planted = make_images(0)
    model = train_tiny(images, labels, 0)
    cls = np.flatnonzero(labels == 1)
    with torch.no_grad():
        a = model.features(to_input(images))
    diff = a[cls[planted[cls]]].mean(0) - a[cls[~planted[cls]]].mean(0)
    v = (diff / diff.norm()).flatten()
    fixed = copy.deepcopy(model)
    scope = set_scope(fixed, "features", "after_layer", to_input(images[:2]))
    opt = make_optimizer(scope.parameters, "adam", 5e-3, 0.9, 0.0)
    x, y = to_input(images), torch.from_numpy(labels)

    def step(rows: np.ndarray, i: int) -> dict[str, torch.Tensor]:
        act = fixed.features(x[rows]).detach().requires_grad_(True)
        logits = fixed.classifier(act)
        (g,) = torch.autograd.grad(rr_output(logits, y[rows], "random_sign", 1).sum(), act, create_graph=True)
        rr = rr_penalty(g, v, "position")
        ce = nn.functional.cross_entropy(logits, y[rows])
        return {"loss": ce + 100.0 * rr, "rr": rr.detach()}

    plan = TrainingPlan(np.arange(len(x)), epochs=6, batch_size=32, seed=0, checkpoint_every=100)
    train(fixed, opt, plan, step, tmp_path, torch.device("cpu"), progress=False)
    fixed.eval()
    before, after = flip_rate(model, images, labels), flip_rate(fixed, images, labels)
    assert before > 0.5 and after < 0.2 * before


def test_cosine_learning_rate_goes_from_the_base_rate_to_zero() -> None:
    plan = TrainingPlan(np.arange(100), epochs=2, batch_size=10, seed=0, checkpoint_every=5)
    assert plan.lr_factor(0) == 1.0 and plan.lr_factor(plan.total_steps // 2) == pytest.approx(0.5)
    assert plan.lr_factor(plan.total_steps - 1) < 0.01
    assert TrainingPlan(np.arange(100), 2, 10, 0, 5, schedule="constant").lr_factor(15) == 1.0


def test_the_region_term_can_be_taken_on_the_flagged_samples_only() -> None:
    from spray.config.correction import CorrectionConfig
    from spray.correct.rrclarc import LayerFeed, RightReasonLoss, region_share

    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(8, 1, 12, 12)
    with torch.no_grad():
        acts = model.features(x)
    feed = LayerFeed(np.arange(8), acts, model.classifier)
    labels = np.array([0, 1, 2, 1, 0, 1, 2, 1])
    samples = SimpleNamespace(labels=labels)
    footprint = np.zeros((3, 3), dtype=np.float32)
    footprint[0] = 1.0  # the top row of positions
    v = np.zeros((1, acts[0].numel()), dtype=np.float32)
    v[0, 0] = 1.0
    flagged = np.array([1, 3])

    def loss(scope: str, rows: np.ndarray) -> dict[str, torch.Tensor]:
        cfg = CorrectionConfig(rr_region_weight=2.0, rr_region_scope=scope)
        fn = RightReasonLoss(model, samples, None, v, cfg, 1, torch.device("cpu"), True, feed,
                             footprint, flagged)  # fmt: skip
        return fn(rows, 0)

    def share(rows: list[int]) -> float:
        a = acts[rows].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.classifier(a)[:, 1].sum(), a)
        return float(region_share(a, g, torch.from_numpy(footprint)).detach())

    batch = np.array([0, 1, 2, 3])
    every, only = loss("all", batch), loss("flagged", batch)
    assert float(every["region"]) == pytest.approx(share([0, 1, 2, 3]), rel=1e-5)
    assert float(only["region"]) == pytest.approx(share([1, 3]), rel=1e-5)
    assert float(only["region"]) != pytest.approx(float(every["region"]), rel=1e-3)
    # a batch without a flagged sample adds nothing: the loss is the CAV term's alone
    none = loss("flagged", np.array([0, 2, 4]))
    assert float(none["region"]) == 0.0
    assert float(none["loss"].detach()) == pytest.approx(float(none["ce"] + 3e4 * none["rr"]), rel=1e-6)
    none["loss"].backward()  # still a graph the training loop can step through


def test_the_right_reason_loss_differentiates_through_fused_attention() -> None:
    """An outside check: RR-ClArC on a timm ViT at a layer with attention after it stopped with a raw
    "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented": the loss
    differentiates a gradient, which the fused attention kernels cannot."""
    timm = pytest.importorskip("timm")
    import torchvision

    from spray.config.correction import CorrectionConfig
    from spray.correct.activations import resolve_layer
    from spray.correct.rrclarc import RightReasonLoss

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, num_classes=3
    ).eval()
    x = torch.rand(4, 3, 16, 16)
    # 'auto' on a ViT is its last block (its 4-D outputs are attention's keys and weights); a Swin's blocks
    # are channels-last (B, H, W, C), so its last (B, C, H, W) map is taken, as before
    assert resolve_layer(model, "auto", x) == "blocks.1"
    swin = torchvision.models.swin_t(weights=None, num_classes=3).eval()
    assert resolve_layer(swin, "auto", torch.rand(2, 3, 64, 64)) == "permute"
    samples = SimpleNamespace(labels=np.array([0, 1, 2, 1]), inputs=lambda rows: x[rows])
    with torch.no_grad():
        n = model.blocks[0](model.patch_embed(x)[:1]).numel() + model.embed_dim  # tokens and the class token
    v = torch.zeros(1, n)
    v[0, 0] = 1.0
    cfg = CorrectionConfig(rr_region_weight=0.0)
    fn = RightReasonLoss(model, samples, SimpleNamespace(layer="blocks.0"), v.numpy(), cfg, 1,
                         torch.device("cpu"), True, None, None, None)  # fmt: skip
    terms = fn(np.arange(4), 0)
    terms["loss"].backward()  # through the attention of blocks.1
    assert model.head.weight.grad is not None and float(terms["rr"]) >= 0.0


def test_the_right_reason_loss_differentiates_through_a_hardsigmoid_gate() -> None:
    """An outside check: RR-ClArC on every MobileNetV3 stopped with a raw "derivative for
    aten::hardsigmoid_backward is not implemented" (its squeeze-excitation gate)."""
    import torchvision

    from spray.config.correction import CorrectionConfig
    from spray.correct.rrclarc import RightReasonLoss, twice_differentiable

    original = torch.nn.functional.hardsigmoid
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=3).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        with twice_differentiable():
            assert torch.allclose(model(x), plain, atol=1e-6)  # the same values, only another backward
        n = model.features[0](x[:1]).numel()
    samples = SimpleNamespace(labels=np.array([0, 1, 2, 1]), inputs=lambda rows: x[rows])
    v = torch.randn(1, n)
    cfg = CorrectionConfig(rr_region_weight=0.0)
    fn = RightReasonLoss(model, samples, SimpleNamespace(layer="features.0"), v.numpy(), cfg, 1,
                         torch.device("cpu"), True, None, None, None)  # fmt: skip
    terms = fn(np.arange(4), 0)
    terms["loss"].backward()  # through the Hardsigmoid gates of features.1 onwards
    assert model.classifier[-1].weight.grad is not None and float(terms["rr"]) > 0.0
    assert torch.nn.functional.hardsigmoid is original  # put back


def test_an_operation_without_a_second_derivative_is_named_with_the_way_out() -> None:
    """Operations whose backward cannot be differentiated are refused with the layer and the choices: an aten
    op without a double-backward formula (a raw RuntimeError before), and an extension's
    ``once_differentiable`` function (the penalty was silently a constant: plain cross-entropy fine-tuning)."""
    from spray.config.correction import CorrectionConfig
    from spray.correct.rrclarc import RightReasonLoss, not_twice_differentiable
    from spray.errors import ConfigError

    x = torch.rand(3, requires_grad=True)
    (g,) = torch.autograd.grad(torch.nn.functional.hardsigmoid(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError) as info:
        (g**2).sum().backward()
    refusal = not_twice_differentiable(info.value, "features.3")
    assert refusal is not None and "after correction.layer 'features.3'" in str(refusal)
    assert "--layer" in str(refusal) and "--method pclarc" in str(refusal)
    assert not_twice_differentiable(RuntimeError("CUDA out of memory"), "features.3") is None

    class Once(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, a: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            (a,) = ctx.saved_tensors
            return 2 * a * grad

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Conv2d(1, 2, 3)
            self.head = nn.Linear(2 * 4 * 4, 3)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.head(Once.apply(self.features(t)).flatten(1))

    torch.manual_seed(0)
    model, inputs = Net(), torch.rand(4, 1, 6, 6)
    samples = SimpleNamespace(labels=np.array([0, 1, 2, 1]), inputs=lambda rows: inputs[rows])
    fn = RightReasonLoss(model, samples, SimpleNamespace(layer="features"), np.ones((1, 32), np.float32),
                         CorrectionConfig(rr_region_weight=0.0), 1, torch.device("cpu"), True, None, None,
                         None)  # fmt: skip
    terms = fn(np.arange(4), 0)
    with pytest.raises(RuntimeError) as info:
        terms["loss"].backward()
    assert "--method pclarc" in str(not_twice_differentiable(info.value, "features"))
    # with nothing trainable between the layer and the logits the penalty is a constant: said, not trained
    model.forward = lambda t: Once.apply(model.features(t)).flatten(1)[:, :3]  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="does not depend on the trained weights"):
        fn(np.arange(4), 0)
