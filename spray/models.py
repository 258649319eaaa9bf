"""Building and loading the model to audit.

Two sources: a torchvision architecture name (+ ``num_classes`` + a state-dict checkpoint) or a Python
factory ``package.module:function`` (+ an optional checkpoint). Checkpoints are loaded with
``torch.load(weights_only=True)``: a fully pickled model can execute arbitrary code when loaded, so it
is only accepted with the explicit ``model.allow_pickle: true`` opt-in.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spray.config import ModelConfig
from spray.errors import ConfigError, ModelError
from spray.factories import import_callable

log = logging.getLogger(__name__)


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            # DataParallel / DDP checkpoints prefix every key with "module."
            if obj and all(k.startswith("module.") for k in obj):
                obj = {k[len("module.") :]: v for k, v in obj.items()}
            return obj
    raise ModelError(
        f"The checkpoint holds a {type(obj).__name__}, not a state dict. Save it with "
        "torch.save(model.state_dict(), path)."
    )


def _load_checkpoint(path: Path, allow_pickle: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except FileNotFoundError:
        raise ModelError(f"Checkpoint {str(path)!r} does not exist. Fix model.checkpoint.") from None
    except Exception as err:
        if not allow_pickle and "weights_only" in str(err):
            raise ModelError(
                f"Checkpoint {str(path)!r} contains pickled Python objects, which could run arbitrary code when "
                "loaded. Re-save it as a state dict (torch.save(model.state_dict(), path)), or set "
                "model.allow_pickle: true if you trust the file."
            ) from None
        raise ModelError(f"Cannot load checkpoint {str(path)!r}: {type(err).__name__}: {err}") from None


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model and load its checkpoint, in eval mode on the CPU.

    Raises
    ------
    ModelError
        On a missing/unsafe/mismatched checkpoint, with the key names and the fix.
    ConfigError
        On an unknown architecture or factory.
    """
    loaded: Any = None
    if cfg.checkpoint is not None:
        loaded = _load_checkpoint(Path(cfg.checkpoint), cfg.allow_pickle)
        if isinstance(loaded, nn.Module):
            log.warning("loaded a fully pickled model from %s (allow_pickle is set)", cfg.checkpoint)
            return loaded.eval()

    if cfg.architecture is not None:
        import torchvision  # only here: importing it costs seconds that factory models need not pay

        try:
            model = torchvision.models.get_model(cfg.architecture, weights=None, num_classes=cfg.num_classes)
        except ValueError:
            known = ", ".join(sorted(torchvision.models.list_models(module=torchvision.models))[:12])
            raise ConfigError(
                f"model.architecture: {cfg.architecture!r} is not a torchvision model. Examples: {known}, ..."
            ) from None
    else:
        assert cfg.factory is not None
        model = import_callable(cfg.factory, "model.factory")(**cfg.factory_kwargs)
        if not isinstance(model, nn.Module):
            raise ModelError(f"model.factory returned a {type(model).__name__}, not a torch.nn.Module.")

    if loaded is not None:
        state = _unwrap_state_dict(loaded)
        own = model.state_dict()
        mismatched = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and own[k].shape != v.shape
        ]
        if mismatched:
            hint = ""
            if cfg.num_classes is not None:
                hint = " If the last layer differs, set model.num_classes to the checkpoint's class count."
            raise ModelError(
                "The checkpoint does not fit the model; shape mismatches:\n  "
                + "\n  ".join(mismatched[:10])
                + f"\n{hint}".rstrip()
            )
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ModelError(
                "The checkpoint's keys do not match the model. "
                f"Missing in checkpoint: {missing[:8]}{'...' if len(missing) > 8 else ''}; "
                f"unexpected in checkpoint: {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}. "
                "Check model.architecture / model.factory."
            )
        model.load_state_dict(state)
    return model.eval()


def model_hash(model: nn.Module) -> str:
    """Content hash of a model: its class name and every parameter/buffer (sorted by name)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_model_output(model: nn.Module, example: torch.Tensor, num_classes: int) -> int:
    """Run one forward pass and check the output shape and values.

    Parameters
    ----------
    example : torch.Tensor
        ``(B, C, H, W)`` a real input batch.
    num_classes : int
        Number of classes of the dataset.

    Returns
    -------
    int
        The model's number of outputs ``K``.
    """
    with torch.no_grad():
        try:
            out = model(example)
        except RuntimeError as err:
            raise ModelError(
                f"The model fails on an input of shape {tuple(example.shape)}: {err}. Check data.transform "
                "(resize, center_crop, grayscale_to_rgb) against what the model expects."
            ) from None
    if out.ndim != 2 or out.shape[0] != example.shape[0]:
        raise ModelError(f"The model must return logits of shape (batch, classes); got {tuple(out.shape)}.")
    if not torch.isfinite(out).all():
        raise ModelError(
            "The model outputs NaN or inf on real inputs; check the checkpoint and the normalisation."
        )
    k = int(out.shape[1])
    if k < num_classes:
        raise ModelError(
            f"The model has {k} outputs but the dataset has {num_classes} classes. Set model.num_classes (or the "
            "factory's argument) to match the checkpoint and the data."
        )
    return k


__all__ = ["build_model", "check_model_output", "model_hash"]
