"""What makes two models the same model for the caches: the hash of its weights and of the user's code.

A model's heatmaps and predictions are reused while :func:`model_hash` is unchanged, so the hash must
change whenever the model computes something else. It covers:

- every parameter and buffer, by name, shape and bytes: the ``state_dict``, and the buffers it leaves out
  (``register_buffer(..., persistent=False)``: a class order or a mask a factory reads from a file);
- the source of every module class in the model (an edited ``forward``);
- the source files of the **user's modules** behind the model: the modules its classes and the factory come
  from, and the user modules those import at module level (``import utils``, ``from .prep import scale``),
  transitively. A helper called by ``forward`` (``prep(x)``), a module-level constant or the factory's own
  body changes the model without changing a class.

A user module is one whose file lies in the user's project: the folder that holds the top-level package (a
folder without ``__init__.py`` too) or the module of a model class or of the factory, or one of the config's
``factory_dirs``, outside the Python installation (standard library and
site-packages) and outside spray, whose own models are covered by the class sources and by
:data:`spray.versions.LRP_VERSION`. The imports are read from the files' text (top-level statements, not
those inside functions), so the hash depends on the files alone, never on what else a process happens to
have imported (``spray audit`` and ``spray correct`` must agree). Not covered: code imported only while
running (inside a function), modules without a file (a notebook's ``__main__``), and edits made after the
module was imported in a long-lived session (the file on disk is hashed); ``docs/nightly.md`` says how to
recompute by hand.

Source is hashed without its comments and blank lines (:func:`code_text`), so editing a comment keeps the
cache; any other edit, spacing and indentation included, is another model.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import site
import sys
import sysconfig
import tokenize
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Top-level packages never hashed as user code (spray's own models are versioned with spray).
LIBRARY_PACKAGES = frozenset({"spray", "torch", "torchvision", "timm", "numpy"})


def model_hash(model: nn.Module, factory: str | None = None, folders: Iterable[Path] = ()) -> str:
    """Content hash of a model: its class name, the source of its module classes, the source files of the
    user modules behind it and every parameter/buffer (sorted by name).

    Parameters
    ----------
    model : nn.Module
        The model as built (weights loaded).
    factory : str, optional
        ``"module:function"`` of ``model.factory``: its module's file (and what it imports) is covered too.
    folders : iterable of Path
        More folders of the user's code (the config's ``factory_dirs``): the modules it imports from there
        are the user's too.

    Returns
    -------
    str
        The SHA-256 hex digest.
    """
    h = hashlib.sha256(type(model).__qualname__.encode())
    for text in _class_sources(model):
        h.update(code_text(text.encode()))
    roots = [type(m).__module__ for m in model.modules()]
    if factory is not None:
        roots.append(factory.partition(":")[0])
    for name, data in user_sources(roots, folders):
        h.update(f"\0module {name}\0".encode())
        h.update(code_text(data))
    state = model.state_dict()
    for name, t in sorted(state.items()):
        _update(h, name, t)
    for name, t in sorted(model.named_buffers()):
        if name not in state:  # non-persistent: not in a checkpoint, but the model computes with it
            _update(h, f"\0buffer {name}", t)
    return h.hexdigest()


def code_text(source: bytes) -> bytes:
    """Python source without its comments and blank lines: an edited comment leaves the model's code, and so
    its cached heatmaps, as they were. Everything else is kept as written (the text, not the tokenizer's
    numbering, which differs between Python versions), and the lines of a string that spans several are kept
    whole (their blank lines and trailing spaces are its value). Source that does not tokenize is returned
    as it is."""
    try:
        tokens = list(tokenize.tokenize(io.BytesIO(source).readline))
        lines = source.decode("utf-8").splitlines()
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
        return source
    verbatim = {row for t in tokens if t.end[0] > t.start[0] for row in range(t.start[0], t.end[0] + 1)}
    for t in tokens:
        if t.type == tokenize.COMMENT:  # a comment runs to the end of its line
            row, col = t.start
            lines[row - 1] = lines[row - 1][:col]
    kept = [line if row in verbatim else line.rstrip() for row, line in enumerate(lines, start=1)]
    return "\n".join(line for row, line in enumerate(kept, start=1) if line or row in verbatim).encode()


def _update(h: Any, name: str, t: torch.Tensor) -> None:
    h.update(name.encode())
    h.update(str(tuple(t.shape)).encode())
    h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())


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


def user_sources(module_names: Iterable[str], folders: Iterable[Path] = ()) -> list[tuple[str, bytes]]:
    """``(module name, source bytes)`` of the user modules among ``module_names`` and of the user modules
    they import at module level, transitively (sorted by name).

    Parameters
    ----------
    module_names : iterable of str
        The roots: the modules of the model's classes and of the factory (modules not imported yet, library
        modules and modules without a file are skipped).
    folders : iterable of Path
        Folders of the user's code besides the roots' projects (``factory_dirs``).

    Returns
    -------
    list of (str, bytes)
    """
    roots = [n for n in dict.fromkeys(module_names) if _user_file(n, None) is not None]
    projects = {p for n in roots if (p := _project(n)) is not None} | {Path(f).resolve() for f in folders}
    seen: dict[str, bytes] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = _user_file(name, projects)
        if name in seen or path is None:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        seen[name] = data
        todo.extend(n for n in _imports(name, data, path) if n not in seen)
    return sorted(seen.items())


def _imports(name: str, source: bytes, path: Path) -> set[str]:
    """Modules a module's top-level statements import (read from its text; not those inside functions)."""
    try:
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError):
        return set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue  # runs later, if ever: what it imports depends on the run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)  # never runs: whether those modules are loaded depends on others
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            if base:
                out.add(base)
                out.update(f"{base}.{alias.name}" for alias in node.names)  # submodules ("from . import x")
        else:
            todo.extend(ast.iter_child_nodes(node))
    return out


def _absolute(module: str, level: int, package: str) -> str:
    """The absolute name of ``from <level dots><module> import ...`` in ``package`` ('' when it leaves it)."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return ""
    head = parts[: len(parts) - (level - 1)]
    return ".".join([*head, module] if module else head)


def _project(name: str) -> Path | None:
    """The folder holding the top-level package (or the module) ``name`` belongs to."""
    top = sys.modules.get(name.split(".")[0])
    file = getattr(top, "__file__", None)
    if top is not None and not file and hasattr(top, "__path__"):
        # a folder without __init__.py (a namespace package, possibly spread over several folders): the
        # project is above the folder that holds this module's own file
        own = getattr(sys.modules.get(name), "__file__", None)
        places = [Path(p).resolve() for p in top.__path__]
        held = [p for p in places if own and Path(own).resolve().is_relative_to(p)]
        return held[0].parent if held else None
    if top is None or not file:
        return None
    path = Path(file).resolve()
    # a package's __init__ sits in the package's folder; its project is the folder above
    return path.parent.parent if hasattr(top, "__path__") else path.parent


def _user_file(name: str, projects: set[Path] | None) -> Path | None:
    """The ``.py`` file of module ``name`` when it is user code (see the module docstring): imported, not a
    library or the installation's, and (``projects`` given) inside one of the projects."""
    module = sys.modules.get(name)
    if module is None or name.split(".")[0] in LIBRARY_PACKAGES:
        return None
    file = getattr(module, "__file__", None)
    if not file or not str(file).endswith(".py"):
        return None
    path = Path(file).resolve()
    if any(path.is_relative_to(root) for root in _installation_roots()):
        return None
    if projects is not None and not any(path.is_relative_to(p) for p in projects):
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
