"""Loading a config file: YAML/JSON → validated :class:`AuditConfig`, with errors that name the key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from spray.config.audit import AuditConfig
from spray.errors import ConfigError


def _resolve_paths(cfg: AuditConfig, base: Path) -> None:
    """Make relative paths relative to the config file's folder and check that input files exist."""
    checks: list[tuple[str, Path | None, object, str]] = [
        ("model.checkpoint", cfg.model.checkpoint, cfg.model, "checkpoint"),
        ("data.path", cfg.data.path, cfg.data, "path"),
        ("data.images", cfg.data.images, cfg.data, "images"),
        ("data.labels", cfg.data.labels, cfg.data, "labels"),
    ]
    for dotted, value, owner, attr in checks:
        if value is None:
            continue
        p = value if value.is_absolute() else (base / value)
        if not p.exists():
            raise ConfigError(
                f"{dotted}: file or folder {str(p)!r} does not exist. Fix the path in the config "
                f"(relative paths are resolved against the config file's folder {str(base)!r})."
            )
        setattr(owner, attr, p)
    if not cfg.output.runs_dir.is_absolute():
        cfg.output.runs_dir = base / cfg.output.runs_dir


def _format_validation_error(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        dotted = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent_model: type[BaseModel] = AuditConfig
            for part in loc[:-1]:
                field = parent_model.model_fields.get(part)
                ann = getattr(field, "annotation", None) if field else None
                if isinstance(ann, type) and issubclass(ann, BaseModel):
                    parent_model = ann
            close = difflib.get_close_matches(loc[-1], list(parent_model.model_fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(parent_model.model_fields)
            lines.append(f"- {dotted}: unknown key.{hint} Valid keys here: {valid}.")
        elif e["type"] == "missing":
            lines.append(f"- {dotted}: required key is missing.")
        else:
            lines.append(f"- {dotted}: {e['msg']} (got {e.get('input')!r}).")
    return "Invalid config:\n" + "\n".join(lines)


def config_from_dict(
    raw: dict[str, Any], *, base_dir: Path | None = None, check_files: bool = True
) -> AuditConfig:
    """Validate a config given as a dict.

    Parameters
    ----------
    raw : dict
        Parsed YAML/JSON.
    base_dir : Path, optional
        Folder that relative paths are resolved against (default: current directory).
    check_files : bool
        Check that input files exist (set False to validate a config on another machine).

    Raises
    ------
    ConfigError
        With every problem, its dotted key and a hint.
    """
    if not isinstance(raw, dict):
        raise ConfigError(
            f"The config must be a mapping of sections (model, data, ...), got {type(raw).__name__}."
        )
    try:
        cfg = AuditConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, raw)) from None
    if check_files:
        _resolve_paths(cfg, (base_dir or Path.cwd()).resolve())
    return cfg


def load_config(path: str | Path, *, check_files: bool = True) -> AuditConfig:
    """Load and validate a YAML or JSON config file.

    Raises
    ------
    ConfigError
        If the file is missing, not YAML, or invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {str(p)!r} does not exist. Pass an existing file with --config.")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {str(p)!r} is not valid YAML: {err}") from None
    return config_from_dict(raw or {}, base_dir=p.parent, check_files=check_files)
