"""Loading a config file: YAML/JSON → validated :class:`AuditConfig`, with errors that name the key."""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from spray.config.audit import AuditConfig
from spray.config.section import _accepted
from spray.errors import ConfigError

# Input files: (dotted key, section, attribute, what it must be).
_INPUTS = (
    ("model.checkpoint", "model", "checkpoint", "file"),
    ("data.path", "data", "path", "folder"),
    ("data.images", "data", "images", "file"),
    ("data.labels", "data", "labels", "file"),
)
_FIX = {
    "data.path": "point it at the root folder of the images (root/<class>/<image>)",
    "model.checkpoint": "point it at the state-dict file",
    "data.images": "point it at the IDX images file",
    "data.labels": "point it at the IDX labels file",
}
# Parts of a pydantic error location that name a member of a union type, not a key.
_TYPE_TAGS = {"int", "float", "str", "bool", "none", "list", "dict", "literal"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (YAML would keep the last silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key (a list or mapping): the constructor reports it
            continue
        if first is not None:
            raise ConfigError(
                f"key {key!r} is given twice in one section (lines {first} and {key_node.start_mark.line + 1}); "
                "YAML would silently keep the last one. Remove one of them."
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _check_input(dotted: str, p: Path, kind: str, base: Path) -> None:
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except (OSError, ValueError) as err:  # a NUL byte, a name too long
        raise ConfigError(f"{dotted}: {str(p)!r} is not a usable path ({err}).") from None
    if not exists:
        raise ConfigError(
            f"{dotted}: file or folder {str(p)!r} does not exist. Fix the path in the config "
            f"(relative paths are resolved against the config file's folder {str(base)!r})."
        )
    if kind == "folder" and not is_dir:
        raise ConfigError(f"{dotted}: {str(p)!r} is a file, not a folder; {_FIX[dotted]}.")
    if kind == "file" and is_dir:
        raise ConfigError(f"{dotted}: {str(p)!r} is a folder, not a file; {_FIX[dotted]}.")


def check_runs_dir(p: Path, what: str = "output.runs_dir") -> None:
    """Raise a ConfigError when the runs directory exists as something other than a folder."""
    try:
        bad = p.exists() and not p.is_dir()
    except (OSError, ValueError) as err:
        raise ConfigError(f"{what}: {str(p)!r} is not a usable path ({err}).") from None
    if bad:
        raise ConfigError(
            f"{what}: {str(p)!r} is a file; runs are published into a folder. Choose another path."
        )


def _expand(dotted: str, p: Path) -> Path:
    """``p`` with ``~`` and environment variables (``$HOME``, ``${RUNS}``) expanded.

    Raises
    ------
    ConfigError
        A variable is not set (the path would hold a folder literally named ``$NAME``).
    """
    out = os.path.expandvars(os.path.expanduser(str(p)))
    left = re.search(r"\$\{?\w+\}?", out)
    if left:
        raise ConfigError(
            f"{dotted}: {str(p)!r} names the environment variable {left.group()}, which is not set. Set it, or "
            "write the path out."
        )
    return Path(out)


def _resolve_notify(cfg: AuditConfig, base: Path) -> None:
    """Make a ``./`` or ``../`` notify program relative to the config's folder, not to the job's cwd."""
    command = cfg.nightly.notify_command
    if command is None:
        return
    words = shlex.split(command)  # the field's validator refused a command that cannot be split
    if words[0].startswith(("./", "../")):
        words[0] = os.path.normpath(base / words[0])
        # assigned, so the field's validator warns when the program is not there or not executable
        cfg.nightly.notify_command = shlex.join(words)


def _resolve_paths(cfg: AuditConfig, base: Path) -> None:
    """Make relative paths relative to the config file's folder (after expanding ``~`` and environment
    variables) and check that input files exist."""
    for dotted, section, attr, kind in _INPUTS:
        owner = getattr(cfg, section)
        value = getattr(owner, attr)
        if value is None:
            continue
        value = _expand(dotted, value)
        p = value if value.is_absolute() else (base / value)
        _check_input(dotted, p, kind, base)
        setattr(owner, attr, p)
    runs_dir = _expand("output.runs_dir", cfg.output.runs_dir)
    cfg.output.runs_dir = runs_dir if runs_dir.is_absolute() else base / runs_dir
    check_runs_dir(cfg.output.runs_dir)
    _resolve_notify(cfg, base)
    db = cfg.correction.flags_db
    if db is not None:
        # every command reads the same database: spray correct resolved it against the config's folder too
        db = _expand("correction.flags_db", db)
        cfg.correction.flags_db = db if db.is_absolute() else base / db


def _locate_factories(cfg: AuditConfig, base: Path) -> None:
    """Find each factory's module (next to the config, in ``factory_dirs``, then on sys.path) without
    importing it."""
    from spray.factories import add_search_folder, locate_module

    folders = []
    for d in cfg.factory_dirs:
        p = d.expanduser() if d.expanduser().is_absolute() else base / d.expanduser()
        if not p.is_dir():
            raise ConfigError(
                f"factory_dirs: {str(p)!r} is not a folder. Give the folder that holds your factory modules "
                "(relative to the config's folder), or remove the entry."
            )
        folders.append(p.resolve())
    cfg.factory_dirs = folders
    for p in reversed(folders):
        add_search_folder(p)
    for what, spec in (("model.factory", cfg.model.factory), ("data.factory", cfg.data.factory)):
        if spec is not None:
            locate_module(spec, what, base)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_path(loc: tuple[Any, ...], raw: Any) -> list[str]:
    """The location's keys, walking the input: parts that are not keys there are the union-member tags
    pydantic inserts (``int``, ``literal['label','pred']``) and are left out."""
    keys: list[str] = []
    node = raw
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        if in_dict or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
        elif isinstance(part, str) and ("[" in part or part in _TYPE_TAGS):
            continue
        else:
            node = None
        keys.append(str(part))
    return keys


def _unknown_key(loc: list[str]) -> str:
    if not loc:
        return "unknown key."
    parent_model: type[BaseModel] = AuditConfig
    for part in loc[:-1]:
        field = parent_model.model_fields.get(part)
        # an optional section (correction.test_data: DataConfig | None) is the section itself
        for ann in _accepted(getattr(field, "annotation", None)) if field else ():
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                parent_model = ann
    close = difflib.get_close_matches(loc[-1], list(parent_model.model_fields), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown key.{hint} Valid keys here: {', '.join(parent_model.model_fields)}."


def _format_validation_error(err: ValidationError, raw: Any) -> str:
    by_key: dict[str, list[str]] = {}
    for e in err.errors():
        loc = _key_path(tuple(e["loc"]), raw)
        dotted = ".".join(loc)
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            text = _unknown_key(loc)
        elif e["type"] == "missing":
            text = "required key is missing."
        elif e["type"] == "value_error" or isinstance(e.get("input"), dict):
            text = msg
        else:
            text = f"{msg} (got {_short(e.get('input'))})"
        if e["type"] == "string_type" and isinstance(e.get("input"), bool):
            # YAML 1.1 reads yes/no/on/off/true/false unquoted as booleans: a class named "no" arrives as False
            said = "yes, on or true" if e["input"] else "no, off or false"
            text += f"; YAML reads an unquoted {said} as a boolean: quote it (e.g. 'no')"
        lines = by_key.setdefault(dotted, [])
        if text not in lines:
            lines.append(text)
    out = []
    for dotted, texts in by_key.items():
        joined = "; or ".join(texts) if len(texts) > 1 else texts[0]
        out.append(f"- {dotted}: {joined}" if dotted else f"- {joined}")
    return "Invalid config:\n" + "\n".join(line if line.endswith(".") else line + "." for line in out)


def _non_finite(raw: Any, path: str = "") -> str | None:
    """The dotted key of the first NaN or infinite number in ``raw`` (YAML's .nan / .inf), if any."""
    if isinstance(raw, float) and not math.isfinite(raw):
        return path or "(top level)"
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}" if path else str(k))
        if found:
            return found
    return None


def _empty_sections(raw: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """``raw`` with every (sub)section left empty (``nightly:`` or ``transform:`` over keys that are all
    commented out, which YAML parses as None) given as ``{}``: it means the section's defaults."""
    out = dict(raw)
    for name, f in model.model_fields.items():
        sub = f.annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)) or name not in out:
            continue
        if out[name] is None:
            out[name] = {}
        elif isinstance(out[name], dict):
            out[name] = _empty_sections(out[name], sub)
    return out


def config_from_dict(
    raw: dict[str, Any], *, base_dir: Path | None = None, check_files: bool = True
) -> AuditConfig:
    """Validate a config given as a dict.

    Parameters
    ----------
    raw : dict
        Parsed YAML/JSON.
    base_dir : Path, optional
        Folder that relative paths and factory modules are resolved against (default: current directory).
    check_files : bool
        Check that input files and factory modules exist (set False to validate a config for another
        machine).

    Raises
    ------
    ConfigError
        With every problem, its dotted key and a hint.
    """
    if not isinstance(raw, dict):
        raise ConfigError(
            f"The config must be a mapping of sections (model, data, ...), got {type(raw).__name__}."
        )
    raw = _empty_sections(raw, AuditConfig)
    bad = _non_finite(raw)
    if bad:
        raise ConfigError(
            f"Invalid config:\n- {bad}: NaN and infinity are not allowed; give a finite number."
        )
    try:
        cfg = AuditConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, raw)) from None
    except RecursionError:
        raise ConfigError("The config is nested too deeply to be a spray config.") from None
    if check_files:
        base = (base_dir or Path.cwd()).resolve()
        _resolve_paths(cfg, base)
        _locate_factories(cfg, base)
    return cfg


def load_config(path: str | Path, *, check_files: bool = True) -> AuditConfig:
    """Load and validate a YAML or JSON config file.

    Raises
    ------
    ConfigError
        If the file is missing, a folder, unreadable, not YAML, has a key twice, or is invalid.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--config {str(p)!r} is a folder, not a config file. Pass the YAML file itself.")
    if not p.is_file():
        raise ConfigError(f"Config file {str(p)!r} does not exist. Pass an existing file with --config.")
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"Config file {str(p)!r} cannot be read: {err.strerror or err}.") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"Config file {str(p)!r} is not UTF-8 text (byte {err.start}): is it the right file?"
        ) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except ConfigError as err:
        raise ConfigError(f"Config file {str(p)!r}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {str(p)!r} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"Config file {str(p)!r} is nested too deeply to be a spray config.") from None
    try:
        return config_from_dict(raw if raw is not None else {}, base_dir=p.parent, check_files=check_files)
    except ConfigError as err:
        raise ConfigError(f"Config file {str(p)!r}: {err}") from None
