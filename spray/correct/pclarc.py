"""P-ClArC: project the artifact direction out of a layer's output (no training).

At the layer, every activation ``x`` is moved along the artifact direction ``v`` to the value the clean
reference has there (Anders et al., Information Fusion 2022)::

    x' = x + v (−vᵀx + vᵀz)

with ``z`` the reference samples' mean activation. With a position-aware direction (pooling ``"none"``)
``x``, ``v`` and ``z`` are whole feature maps; with a pooled direction ``v`` lives on the channels and
the projection is applied at every position (``z`` per position). The component of ``x`` orthogonal to
``v`` is untouched, so what the model computes from everything else is unchanged.

The projection is a module of its own (:class:`ArtifactProjection`), inserted after the layer as
``nn.Sequential(layer, projection)`` at the layer's path, so the corrected model is an ordinary module
whose state dict holds ``v`` and ``z`` as buffers. For LRP it is a linear map whose gradient is the
projection itself, so relevance along ``v`` is removed with the activation (the plain-gradient rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from spray.correct.cav import ArtifactDirection
from spray.errors import ConfigError
from spray.lrp.canonizers import model_copy
from spray.lrp.composites import register_layer_rule
from spray.lrp.rules import Rule, RuleModule


class ArtifactProjection(nn.Module):
    """``x ↦ x + v(−vᵀx + vᵀz)``, at every position when ``v`` is over channels only.

    Parameters
    ----------
    vector : torch.Tensor
        ``(D,)`` unit direction; ``D`` is ``C`` (per position) or the size of one activation.
    reference : torch.Tensor
        ``(C, H, W)`` or ``(D,)`` clean mean activation ``z``.
    """

    vector: torch.Tensor
    reference: torch.Tensor
    #: Moves relevance onto units LRP's self-check cannot judge (it mixes channels before a ReLU), by design.
    lrp_removes_relevance: ClassVar[bool] = True

    def __init__(self, vector: torch.Tensor, reference: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("vector", vector.detach().float().clone())
        self.register_buffer("reference", reference.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, H, W)`` or ``(B, D)`` → the projected activation, same shape."""
        v = self.vector.to(x.dtype)
        z = self.reference.to(x.dtype)
        if v.numel() == x[0].numel():
            coef = (x - z).flatten(1) @ v
            return x - (coef[:, None] * v[None]).view_as(x)
        vv = v.view(1, -1, *([1] * (x.dim() - 2)))
        coef = ((x - z) * vv).sum(1, keepdim=True)
        return x - coef * vv


#: Attribute prefixes a :class:`ProjectedLayer` does not answer for its layer: spray's own LRP marks.
_NOT_FORWARDED = ("lrp_", "fuse_", "inplace")


class ProjectedLayer(nn.Sequential):
    """The user's layer followed by an :class:`ArtifactProjection` (``[0]`` layer, ``[1]`` projection).

    Its parent may call it with keyword arguments (``nn.TransformerEncoder`` passes ``src_mask``) and read the
    layer's attributes (``self_attn``, ``weight``, ``eps``): both go to the user's layer.
    """

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        """The layer's output ``(B, ...)``, projected."""
        return self[1](self[0](input, *args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("0")
            # its own slots ("1" while it is built) are never the layer's, nor the marks spray's LRP canonizers
            # look for on every module (they would fuse or switch the layer a second time through the wrapper)
            if inner is None or name.isdigit() or name.startswith(_NOT_FORWARDED):
                raise
            return getattr(inner, name)


def check_projection_runs(corrected: nn.Module, example: torch.Tensor) -> None:
    """Refuse a corrected model whose projection its forward never calls in evaluation: a parent with a fused
    path (``nn.TransformerEncoderLayer`` in eval mode without gradients) reads a sublayer's weights and skips
    its forward, so the correction would be measured absent.

    Parameters
    ----------
    corrected : nn.Module
        The model with its :class:`ProjectedLayer` (from :func:`pclarc`).
    example : torch.Tensor
        ``(B, C, H, W)`` inputs on the model's device.

    Raises
    ------
    ConfigError
        With the layer and the fix (name the whole block).
    """
    found = [(n, m) for n, m in corrected.named_modules() if isinstance(m, ProjectedLayer)]
    calls: list[int] = []

    def counted(projection: nn.Module) -> Any:
        plain = projection.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return plain(x)

        return forward

    # a wrapped forward, not a hook: a forward hook anywhere in the layer turns its fused path off
    for _, m in found:
        m[1].forward = counted(m[1])
    try:
        with torch.no_grad():
            corrected(example)
    finally:
        for _, m in found:
            del m[1].forward
    if found and not calls:
        raise ConfigError(
            f"correction.layer: {found[0][0]!r} is not called through its own forward when the model evaluates "
            "(its parent reads its weights in a fused path, as nn.TransformerEncoderLayer does in eval mode), "
            "so P-ClArC's projection there would never run. Name the whole block instead (correction.layer, "
            "--layer), e.g. the encoder layer that holds it, or use --method rrclarc."
        )


@dataclass(frozen=True)
class ProjectionRule(Rule):
    """LRP through an :class:`ArtifactProjection`: its own Jacobian ``I − v vᵀ``.

    The projection is linear in ``x``, so its plain gradient is the right backward (in the gradient×input
    frame it removes the relevance along ``v``). It is not conservative, by design: the relevance the
    model gave the artifact direction is what P-ClArC takes away, so LRP's first-batch conservation check
    must not hold the projection to conservation (it would refuse every corrected model).
    """

    conservative: ClassVar[bool] = False
    gradient_frame_only: ClassVar[bool] = False

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        """The projection's forward; autograd gives its Jacobian."""
        return module.inner(x)


# Registered once, for every Explainer, when this module loads.
register_layer_rule(ArtifactProjection, ProjectionRule())


def original_layer(model: nn.Module, layer: str) -> str:
    """Path of the user's own layer: ``layer`` itself, or ``layer + ".0"`` in a projected model."""
    module = model.get_submodule(layer)
    return f"{layer}.0" if isinstance(module, ProjectedLayer) else layer


def insert_projection(model: nn.Module, layer: str, projection: ArtifactProjection) -> None:
    """Put ``projection`` after the module at ``layer`` (in place)."""
    if not layer:
        raise ConfigError("correction.layer: P-ClArC needs a layer inside the model, not the model itself")
    parent_path, _, name = layer.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    inner = parent.get_submodule(name)
    if isinstance(inner, ProjectedLayer):
        raise ConfigError(f"correction.layer: {layer!r} already carries a P-ClArC projection")
    setattr(parent, name, ProjectedLayer(inner, projection))


def pclarc(model: nn.Module, direction: ArtifactDirection) -> nn.Module:
    """A corrected copy of ``model`` with the artifact direction projected out at its layer.

    Parameters
    ----------
    model : nn.Module
        The audited model (left untouched).
    direction : ArtifactDirection
        The direction and the reference mean, from :func:`spray.correct.cav.fit_direction`.

    Returns
    -------
    nn.Module
        A deep copy with a :class:`ProjectedLayer` at ``direction.layer``, in eval mode.
    """
    corrected = model_copy(model)
    device = next(iter(corrected.parameters()), torch.empty(0)).device
    projection = ArtifactProjection(
        torch.from_numpy(direction.vector), torch.from_numpy(direction.reference_mean)
    ).to(device)
    insert_projection(corrected, direction.layer, projection)
    return corrected.eval()
