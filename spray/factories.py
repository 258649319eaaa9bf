"""User factories: ``package.module:function`` strings in the config, resolved to callables."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from spray.errors import ConfigError


def import_callable(spec: str, what: str) -> Callable[..., Any]:
    """The callable named by ``spec`` (``"package.module:function"``); ``what`` names the config key in errors."""
    mod_name, _, fn_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        raise ConfigError(
            f"{what}: cannot import module {mod_name!r} ({err}). Is it on PYTHONPATH?"
        ) from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"{what}: module {mod_name!r} has no callable {fn_name!r}.")
    return fn
