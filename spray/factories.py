"""User factories: ``package.module:function`` strings in the config, resolved to callables.

Where a module is looked up: the config file's folder first (a ``my_data.py`` or ``my_project/``
package next to ``audit.yaml`` is found without setting ``PYTHONPATH``), then ``sys.path``. When
:func:`locate_module` finds the module next to the config, it puts that folder at the front of
``sys.path`` — as ``python script.py`` does for the script's folder — so that the module's own imports
of its neighbours and the data loader's worker processes find it too. That check happens when the
config is loaded, before torch is imported: a missing module is reported in well under a second.

Errors raised by the user's code are reported as "``<key>`` failed", with the user's part of the
traceback below the message (spray's own frames left out).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spray.errors import ConfigError, SprayError

SPEC_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")

# Top-level module name -> the config folder it was found in (to tell a stale import of the same name
# from another folder, e.g. two configs with their own my_data.py in one process).
_FOUND_IN: dict[str, Path] = {}


def add_search_folder(folder: Path) -> None:
    """Put ``folder`` first on ``sys.path`` (a config's own folder or its ``factory_dirs``), once."""
    text = str(folder)
    if text in sys.path:
        sys.path.remove(text)
    sys.path.insert(0, text)


def module_folder(spec: str) -> Path | None:
    """The folder a factory's top-level module was found in next to a config (:func:`locate_module`),
    None when it came from ``sys.path`` (an installed package)."""
    return _FOUND_IN.get(spec.partition(":")[0].split(".")[0])


def locate_module(spec: str, what: str, config_dir: Path) -> Path | None:
    """Check that the module of ``spec`` can be found, without importing it.

    Returns
    -------
    Path or None
        ``config_dir`` when the module lives there (and it is now first on ``sys.path``), None when it
        is found on ``sys.path``.

    Raises
    ------
    ConfigError
        When it is found in neither place.
    """
    mod_name = spec.partition(":")[0]
    top = mod_name.split(".")[0]
    if (
        (config_dir / f"{top}.py").is_file()
        or (config_dir / top / "__init__.py").is_file()
        or ((config_dir / top).is_dir() and "." in mod_name)
    ):
        add_search_folder(config_dir)
        _FOUND_IN[top] = config_dir
        return config_dir
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(
            f"{what}: cannot find module {mod_name!r}: there is no {top}.py or {top}/ next to the config "
            f"({str(config_dir)!r}) and it is not on sys.path. Put the module next to the config file, "
            "install its package (pip install -e PATH), or add its folder to PYTHONPATH."
        )
    return None


def _user_traceback(err: BaseException) -> str:
    """The frames of ``err``'s traceback outside spray, formatted without the 'Traceback' header line."""
    spray_dir = str(Path(__file__).resolve().parent)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(spray_dir)]
    lines = traceback.format_list(frames)
    lines += traceback.format_exception_only(type(err), err)
    return "".join(lines).rstrip()


def _stale(mod_name: str) -> bool:
    """Whether ``mod_name`` is imported from another folder than the config folder it was found in."""
    top = mod_name.split(".")[0]
    folder = _FOUND_IN.get(top)
    mod = sys.modules.get(top)
    if folder is None or mod is None:
        return False
    origin = getattr(mod, "__file__", None)
    return origin is None or not Path(origin).resolve().is_relative_to(folder.resolve())


def import_callable(spec: str, what: str) -> Callable[..., Any]:
    """The callable named by ``spec`` (``"package.module:function"``); ``what`` names the config key in errors.

    Raises
    ------
    ConfigError
        When the module is not found, fails to import (with its traceback), or has no such callable.
    """
    if not SPEC_PATTERN.match(spec):
        raise ConfigError(f"{what}: {spec!r} is not of the form 'package.module:function'.")
    mod_name, _, fn_name = spec.partition(":")
    if _stale(mod_name):
        top = mod_name.split(".")[0]
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[name]
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (mod_name == err.name or mod_name.startswith(err.name + ".")):
            raise ConfigError(
                f"{what}: cannot import module {mod_name!r} ({err}). Put it next to the config file, install "
                "its package, or add its folder to PYTHONPATH."
            ) from None
        raise ConfigError(f"{what}: importing {mod_name!r} failed:\n{_user_traceback(err)}") from None
    except Exception as err:  # a syntax error or an exception in the user's module
        raise ConfigError(f"{what}: importing {mod_name!r} failed:\n{_user_traceback(err)}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        names = [n for n, v in vars(mod).items() if callable(v) and not n.startswith("_")]
        close = difflib.get_close_matches(fn_name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        if spec in MOVED_FACTORIES:
            hint = f" It moved to {MOVED_FACTORIES[spec]!r} (this config was written by an older spray): use that."
        raise ConfigError(f"{what}: module {mod_name!r} has no callable {fn_name!r}.{hint}")
    return fn


#: spray's own factories that moved, for the configs older versions wrote (``spray demo``'s).
MOVED_FACTORIES = {"spray.models:small_cnn": "spray.lab.cnn:small_cnn"}


def check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise a ConfigError naming the keys of ``<what>_kwargs`` that ``fn`` does not take (or misses)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C function without a signature: let the call report it
    try:
        sig.bind(**kwargs)
    except TypeError as err:
        params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        taken = ", ".join(p.name for p in params) or "no arguments"
        unknown = [k for k in kwargs if k not in sig.parameters]
        detail = f"unknown keys {unknown}" if unknown else str(err)
        raise ConfigError(
            f"{what}_kwargs does not fit {getattr(fn, '__qualname__', fn)!r}: {detail}. It takes: {taken}."
        ) from None


def call_user(what: str, error: type[SprayError], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; an exception becomes ``error`` ("<what> failed: ...", the user's traceback below)."""
    try:
        return fn(*args, **kwargs)
    except SprayError:
        raise
    except Exception as err:
        raise error(f"{what} failed:\n{_user_traceback(err)}") from None


def call_factory(spec: str, kwargs: dict[str, Any], what: str, error: type[SprayError]) -> Any:
    """Import ``spec``, check ``kwargs`` against its signature and call it.

    Raises
    ------
    ConfigError
        Module or callable not found, or kwargs it does not take.
    error
        When the factory raises ("<what> failed", with the user's traceback).
    """
    fn = import_callable(spec, what)
    check_kwargs(fn, kwargs, what)
    return call_user(f"{what} {spec!r}", error, fn, **kwargs)
