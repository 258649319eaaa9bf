"""Agreement of spray's LRP with zennit (CNNs) and LXT (vision transformers), and conservation, per architecture.

The table in docs/lrp.md ("Supported architectures") comes from::

    OMP_NUM_THREADS=1 python benchmarks/lrp_agreement.py

For every architecture and composite it reports, over 2 random inputs: the largest ``1 − cosine`` and the
largest ``|spray − oracle| / max|oracle|`` per sample against the oracle that applies the same rules
(tests/lrp_oracles.py), and the largest ``|Σ relevance / target logit − 1|`` on the same architecture with
every bias (and class token, position embedding) set to 0. Models: random weights, BatchNorm statistics
measured on random inputs, the sizes of tests/test_lrp_architectures.py (``--full`` adds the full-size
torchvision models at 64×64 and ViT-B/16 at 224×224).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spray.lrp import Explainer  # noqa: E402
from tests import test_lrp_architectures as arch  # noqa: E402
from tests.lrp_oracles import lxt_reference, lxt_swin_reference, zennit_reference  # noqa: E402


def _distance(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    scale = ref.flatten(1).abs().max(1).values.clamp(min=1e-30)[:, None]
    a, b = ours.flatten(1) / scale, ref.flatten(1) / scale
    cos = nn.functional.cosine_similarity(a, b, dim=1)
    return float((1 - cos).max()), float((a - b).abs().max())


def _conservation(model: nn.Module, x: torch.Tensor, composite: str, kwargs: dict[str, Any]) -> float:
    result = Explainer(model, composite, composite_kwargs=kwargs)(x)
    return float((arch._ratio(result) - 1).abs().max())


def cnn_row(name: str, composite: str) -> dict[str, Any]:
    """Agreement with zennit and conservation of one CNN under one composite."""
    kwargs = arch.BOX if composite == "EpsilonGammaBox" else {}
    model, x = arch._cnn(name)
    ours = Explainer(model, composite, composite_kwargs=kwargs)(x)
    cos, err = _distance(ours.relevance, zennit_reference(model, x, composite, ours.targets, **kwargs))
    zero, xz = arch._cnn(name, zero_bias=True)
    return {
        "oracle": "zennit",
        "1-cos": cos,
        "max_err": err,
        "conservation": _conservation(zero, xz, composite, kwargs),
    }


def vit_row(name: str, composite: str) -> dict[str, Any]:
    """Agreement with LXT and conservation (under CP-LRP) of one ViT."""
    model, x = arch._vit(name)
    ours = Explainer(model, composite, composite_kwargs={"epsilon": 1e-9})(x)  # LXT: LRP-0 on linear layers
    attention = "cp" if composite == "CPLRP" else "attnlrp"
    cos, err = _distance(ours.relevance, lxt_reference(model, x, ours.targets, attention))
    zero, xz = arch._vit(name, zero_bias=True)
    return {
        "oracle": "LXT",
        "1-cos": cos,
        "max_err": err,
        "conservation": _conservation(zero, xz, composite, {}),
    }


def swin_row(composite: str, v2: bool = False) -> dict[str, Any]:
    """Agreement with LXT's rules and conservation (under CP-LRP) of a small torchvision Swin (``v2``: SwinV2,
    cosine attention)."""
    model = arch._swin(v2=v2)
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32)
    ours = Explainer(model, composite, composite_kwargs={"epsilon": 1e-9})(x)
    attention = "cp" if composite == "CPLRP" else "attnlrp"
    cos, err = _distance(ours.relevance, lxt_swin_reference(model, x, ours.targets, attention))
    return {
        "oracle": "LXT rules",
        "1-cos": cos,
        "max_err": err,
        "conservation": _conservation(arch._swin(zero_bias=True, v2=v2), x, composite, {}),
    }


def rows(full: bool) -> list[tuple[str, str, Callable[[], dict[str, Any]]]]:
    """(architecture, composite, measurement) to run."""
    out: list[tuple[str, str, Callable[[], dict[str, Any]]]] = []
    for name in arch.CNNS:
        for composite in ("EpsilonPlusFlat", "EpsilonGammaBox"):
            out.append((name, composite, lambda n=name, c=composite: cnn_row(n, c)))
    if full:
        for name in arch.SLOW_CNNS:
            out.append((name, "EpsilonPlusFlat", lambda n=name: cnn_row(n, "EpsilonPlusFlat")))
    for name in arch.VITS:
        for composite in ("AttnLRP", "CPLRP"):
            out.append((name, composite, lambda n=name, c=composite: vit_row(n, c)))
    for composite in ("AttnLRP", "CPLRP"):
        out.append(("swin (torchvision)", composite, lambda c=composite: swin_row(c)))
    for composite in ("AttnLRP", "CPLRP"):
        out.append(("swinv2 (torchvision)", composite, lambda c=composite: swin_row(c, v2=True)))
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the agreement table (markdown)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="also the full-size models (slow)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these architectures (row names)")
    args = parser.parse_args(argv)
    print("| architecture | composite | oracle | max 1 − cos | max abs err / max | max conservation error |")
    print("|---|---|---|---|---|---|")
    for name, composite, measure in rows(args.full):
        if args.only and name not in args.only:
            continue
        r = measure()
        print(
            f"| {name} | {composite} | {r['oracle']} | {max(r['1-cos'], 0.0):.1e} | {r['max_err']:.1e} | "
            f"{r['conservation']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
