"""What makes two models the same model for the caches: the hash of its weights and of the user's code.

A model's heatmaps and predictions are reused while :func:`model_hash` is unchanged, so the hash must
change whenever the model computes something else. It covers:

- every parameter and persistent buffer (the ``state_dict``), by name, shape and bytes;
- the source of every module class in the model (an edited ``forward``);
- the whole source file of every **user module** the model's classes and the factory come from, and of
  the user modules those import (names bound at module level: ``import utils``, ``from utils import
  prep``), transitively. A helper called by ``forward`` (``prep(x)``), a module-level constant, or the
  factory's own body changes the model without changing a class.

A user module is one whose file lies outside the Python installation (standard library and
site-packages) and outside spray itself (whose models are covered by the class sources and by
:data:`spray.versions.LRP_VERSION`): a library upgrade does not recompute every cache, an edit to the
user's own files does. Code reached only at run time (``importlib.import_module`` inside ``forward``) is not
seen; ``docs/run_layout.md`` says how to recompute by hand.
"""

from __future__ import annotations

import hashlib
import inspect
import site
import sys
import sysconfig
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

#: Top-level packages never hashed as user code (spray's own models are versioned with spray).
LIBRARY_PACKAGES = frozenset({"spray", "torch", "torchvision", "timm", "numpy"})


def model_hash(model: nn.Module, factory: str | None = None) -> str:
    """Content hash of a model: its class name, the source of its module classes, the source files of the
    user modules behind it (``factory``: ``"module:function"`` of ``model.factory``) and every
    parameter/buffer (sorted by name)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for text in _class_sources(model):
        h.update(text.encode())
    roots = [type(m).__module__ for m in model.modules()]
    if factory is not None:
        roots.append(factory.partition(":")[0])
    for name, data in user_sources(roots):
        h.update(f"\0module {name}\0".encode())
        h.update(data)
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _class_sources(model: nn.Module) -> list[str]:
    """The source code of every module class in ``model`` (sorted by qualified name; a class whose source
    cannot be read, such as a compiled one, gives its name only)."""
    out = []
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        try:
            text = inspect.getsource(cls)
        except (OSError, TypeError):
            text = ""
        out.append(f"{cls.__module__}.{cls.__qualname__}\0{text}")
    return out


def user_sources(module_names: Iterable[str]) -> list[tuple[str, bytes]]:
    """``(module name, source bytes)`` of the user modules among ``module_names`` and of the user modules
    they import, transitively (sorted by name; modules not imported yet are skipped)."""
    seen: dict[str, bytes] = {}
    todo = [n for n in dict.fromkeys(module_names)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        module = sys.modules.get(name)
        path = _user_file(module)
        if module is None or path is None:
            continue
        try:
            seen[name] = path.read_bytes()
        except OSError:
            continue
        todo.extend(n for n in _imported(module) if n not in seen)
    return sorted(seen.items())


def _imported(module: ModuleType) -> set[str]:
    """Names of the modules a module's globals come from (imported modules, functions, classes)."""
    out = set()
    for value in list(vars(module).values()):
        if isinstance(value, ModuleType):
            out.add(value.__name__)
        else:
            owner = getattr(value, "__module__", None)
            if isinstance(owner, str) and owner != module.__name__:
                out.add(owner)
    return out


def _user_file(module: ModuleType | None) -> Path | None:
    """The module's ``.py`` file when it is user code (see the module docstring), else None."""
    if module is None or module.__name__.split(".")[0] in LIBRARY_PACKAGES:
        return None
    file = getattr(module, "__file__", None)
    if not file or not str(file).endswith(".py"):
        return None
    path = Path(file).resolve()
    if any(path.is_relative_to(root) for root in _installation_roots()):
        return None
    return path


@cache
def _installation_roots() -> tuple[Path, ...]:
    """The standard library's and the site-packages folders of this interpreter."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(site.getsitepackages())
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        roots.add(site.getusersitepackages())
    return tuple(Path(r).resolve() for r in roots if r)


__all__ = ["model_hash", "user_sources"]
