"""The corrected model on disk: a state dict, a factory that rebuilds the module, and a spray config.

The user's files are never touched. A correction folder holds ``model.pt`` (the corrected model's state
dict) and ``config.yaml``, the audit config with its ``model`` section replaced by::

    model:
      factory: spray.correct.checkpoint:corrected_model
      factory_kwargs: {base: {<the original model section, without checkpoint>}, projection: ...}
      checkpoint: model.pt

so ``spray audit --config <correction>/config.yaml`` (the re-audit) and ``spray.models.build_model`` load
it like any model. :func:`corrected_model` builds the original architecture (torchvision name or the
user's factory) and, for P-ClArC, inserts an empty :class:`~spray.correct.pclarc.ArtifactProjection` of
the right shape that the checkpoint then fills.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from spray.config import AuditConfig, ModelConfig
from spray.correct.pclarc import ArtifactProjection, ProjectedLayer, insert_projection
from spray.runs.atomic import atomic_write_bytes

FACTORY = "spray.correct.checkpoint:corrected_model"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.yaml"


def corrected_model(base: dict[str, Any], projection: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild a corrected model's module (weights come from its checkpoint).

    Parameters
    ----------
    base : dict
        The original ``model`` section (architecture or factory, their arguments); its checkpoint is ignored.
    projection : dict, optional
        ``{"layer": path, "vector": [D], "reference": [C, H, W]}`` (shapes) for a P-ClArC model.

    Returns
    -------
    nn.Module
        The module, randomly initialised, with the projection's buffers zero until the checkpoint loads.
    """
    from spray.models import build_model

    cfg = ModelConfig.model_validate({**base, "checkpoint": None})
    model = build_model(cfg)
    if projection is not None:
        empty = ArtifactProjection(torch.zeros(projection["vector"]), torch.zeros(projection["reference"]))
        insert_projection(model, str(projection["layer"]), empty)
    return model.eval()


def projection_spec(model: nn.Module) -> dict[str, Any] | None:
    """The ``projection`` argument of :func:`corrected_model` for ``model`` (None without a projection)."""
    for path, module in model.named_modules():
        if isinstance(module, ProjectedLayer):
            proj = module[1]
            assert isinstance(proj, ArtifactProjection)
            return {"layer": path, "vector": list(proj.vector.shape), "reference": list(proj.reference.shape)}
    return None


def _factory_folders(cfg: AuditConfig) -> list[Path]:
    """Where the config's factory modules were found next to it, and its own ``factory_dirs``: the corrected
    config lives in the correction folder, where the user's modules are not."""
    from spray.factories import module_folder

    found = [module_folder(s) for s in (cfg.model.factory, cfg.data.factory) if s is not None]
    return list(dict.fromkeys([*(p for p in found if p is not None), *cfg.factory_dirs]))


def save_corrected(model: nn.Module, cfg: AuditConfig, folder: Path, runs_dir: str, name: str) -> Path:
    """Write ``model.pt`` and ``config.yaml`` into ``folder``; returns the config's path.

    Parameters
    ----------
    model : nn.Module
        The corrected model.
    cfg : AuditConfig
        The audit config it was corrected under (data, LRP, analysis and scoring settings are kept).
    folder : Path
        Destination (created).
    runs_dir : str
        ``output.runs_dir`` of the written config (relative paths resolve against ``folder``).
    name : str
        ``name`` of the written config.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Serialised in memory: torch names the archive's folder after the file, so a temporary file's name made
    # the same weights differ byte for byte between two runs.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(folder / MODEL_FILE, buffer.getvalue())
    return write_corrected_config(cfg, folder, runs_dir, name, projection_spec(model))


def saved_projection(folder: Path) -> dict[str, Any] | None:
    """The ``projection`` argument recorded in ``folder``'s ``config.yaml`` (None without a projection)."""
    raw = yaml.safe_load((folder / CONFIG_FILE).read_text())
    projection: dict[str, Any] | None = raw["model"]["factory_kwargs"]["projection"]
    return projection


def write_corrected_config(
    cfg: AuditConfig, folder: Path, runs_dir: str, name: str, projection: dict[str, Any] | None
) -> Path:
    """Write ``config.yaml`` of the corrected model saved in ``folder`` (see :func:`save_corrected`), from
    ``cfg``: a resumed correction writes it again, so its re-audit reads the data the config names now (the
    project may have moved since the model was saved)."""
    raw = cfg.model_dump(mode="json", exclude={"correction"})
    base = {k: v for k, v in cfg.model.model_dump(mode="json").items() if k != "checkpoint"}
    raw["model"] = {
        "factory": FACTORY,
        "factory_kwargs": {"base": base, "projection": projection},
        "checkpoint": MODEL_FILE,
    }
    raw["name"] = name
    raw["output"]["runs_dir"] = runs_dir
    raw["factory_dirs"] = [str(p) for p in _factory_folders(cfg)]
    path = folder / CONFIG_FILE
    atomic_write_bytes(path, yaml.safe_dump(raw, sort_keys=False).encode())
    return path
