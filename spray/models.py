"""Building and loading the model to audit.

Two sources: an architecture name (torchvision, or timm as ``timm:NAME``; + ``num_classes`` + a
state-dict checkpoint) or a Python factory ``package.module:function`` (+ an optional checkpoint).
Architectures are built with random weights (``weights=None`` / ``pretrained=False``): nothing is ever
downloaded, the weights come from the checkpoint. Checkpoints are loaded with
``torch.load(weights_only=True)``: a fully pickled model can execute arbitrary code when loaded, so it
is only accepted with the explicit ``model.allow_pickle: true`` opt-in. A model whose forward returns a
tuple, list or dict is wrapped in :class:`OutputSelector` (``model.output``).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spray.checkpoints import is_weights, read_checkpoint, state_dict_of, strip_prefix, without_ddp_prefix
from spray.config import ModelConfig
from spray.errors import ClassCountError, ConfigError, ModelError
from spray.factories import import_callable
from spray.lrp.preparation import uncompiled
from spray.model_dtype import as_float32
from spray.model_facts import INPUT_TRANSFORMING
from spray.model_identity import model_hash
from spray.model_output import select_output

log = logging.getLogger(__name__)


# Its module path is part of every model hash with model.output set (spray.model_identity hashes each class's
# qualified name): moved elsewhere, every such user's model would read as another model.
class OutputSelector(nn.Module):
    """Wraps a model whose forward returns a tuple, list, dict or an object with attributes, and returns
    the logits from it (``model.output``: an index or a key).

    Parameters
    ----------
    model : nn.Module
        The user's model (kept as the submodule ``model``).
    key : int or str
        Index (tuple, list) or key/attribute name (dict, Hugging Face-style output object).
    """

    def __init__(self, model: nn.Module, key: int | str) -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``model(x)[key]`` (or ``getattr(model(x), key)``)."""
        return select_output(self.model(x), self.key)


def _timm_model(name: str, cfg: ModelConfig) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ConfigError(
            f"model.architecture: {cfg.architecture!r} needs the 'timm' package (pip install timm)."
        ) from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Close names: {', '.join(close)}." if close else " List them with timm.list_models()."
        raise ConfigError(f"model.architecture: {name!r} is not a timm model.{hint}")
    kwargs = {"num_classes": cfg.num_classes, **cfg.architecture_kwargs}
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as err:
        raise ConfigError(
            f"model.architecture_kwargs: timm's {name!r} does not accept {_rejected(err, cfg)}: {err}"
        ) from None


def _architecture(cfg: ModelConfig) -> nn.Module:
    assert cfg.architecture is not None
    if cfg.architecture.startswith("timm:"):
        return _timm_model(cfg.architecture[len("timm:") :], cfg)
    import torchvision  # only here: importing it costs seconds that factory models need not pay

    if cfg.architecture in INPUT_TRANSFORMING and cfg.architecture_kwargs.get("transform_input"):
        # its shift inside forward() takes relevance that no input pixel gets: LRP's check refuses it later
        raise ConfigError(
            f"model.architecture_kwargs: transform_input: true makes {cfg.architecture} re-normalise its input "
            "inside forward() (each channel to mean 0.5, std 0.5), which spray cannot explain. The same model "
            "without it computes the same logits from inputs normalised that way: set transform_input: false "
            "and data.transform mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5]."
        )
    kwargs = {"num_classes": cfg.num_classes, **cfg.architecture_kwargs}
    try:
        return torchvision.models.get_model(cfg.architecture, weights=None, **kwargs)
    except ValueError:
        known = ", ".join(sorted(torchvision.models.list_models(module=torchvision.models))[:12])
        raise ConfigError(
            f"model.architecture: {cfg.architecture!r} is not a torchvision model (timm models: "
            f"'timm:NAME'). Examples: {known}, ..."
        ) from None
    except TypeError as err:
        raise ConfigError(
            f"model.architecture_kwargs: torchvision's {cfg.architecture!r} does not accept {_rejected(err, cfg)}: "
            f"{err}"
        ) from None


def _rejected(err: TypeError, cfg: ModelConfig) -> str:
    """The keyword the constructor refused, as its TypeError names it; else the user's own keywords (not
    ``num_classes``, which spray passes and every classifier takes)."""
    named = re.search(r"unexpected keyword argument '(\w+)'", str(err))
    return repr(named.group(1)) if named else str(sorted(cfg.architecture_kwargs))


def _check_factory_kwargs(factory: Callable[..., Any], cfg: ModelConfig) -> None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in cfg.factory_kwargs if k not in accepted]
    if unknown:
        keys = ", ".join(f"model.factory_kwargs.{k}" for k in unknown)
        raise ConfigError(
            f"{keys}: {cfg.factory} takes no such argument. Its parameters are: "
            f"{', '.join(accepted) or '(none)'}."
        )


def _factory_model(cfg: ModelConfig) -> nn.Module:
    assert cfg.factory is not None
    factory = import_callable(cfg.factory, "model.factory")
    _check_factory_kwargs(factory, cfg)
    try:
        model = factory(**cfg.factory_kwargs)
    except Exception as err:
        # the user's own frames (not spray's above the factory call), under a heading of our own: the
        # message is an error report, not a crash
        tb = err.__traceback__.tb_next if err.__traceback__ else None
        frames = [*traceback.format_tb(tb), *traceback.format_exception_only(type(err), err)]
        raise ModelError(
            f"model.factory failed: {cfg.factory}(**{cfg.factory_kwargs!r}) raised {type(err).__name__}: {err}\n"
            "Fix the factory or model.factory_kwargs. Where it failed (most recent call last):\n"
            + "".join(frames).rstrip()
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.factory returned a {type(model).__name__}, not a torch.nn.Module.")
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError(
            f"model.factory {cfg.factory} returned a TorchScript module (torch.jit.script or trace): spray explains "
            "a model's Python layers, which TorchScript compiles away. Return the Python model instead (a scripted "
            "module's state_dict() loads into it)."
        )
    eager = uncompiled(model)
    if eager is not model:
        log.info("model.factory returned a torch.compile'd model: the model it compiles is explained")
    return eager


def _head_hint(cfg: ModelConfig, mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> str:
    """Name the key that sets the class count when the last mismatched tensor looks like a classifier."""
    _, theirs, ours = mismatched[-1]
    if not theirs or not ours or theirs[1:] != ours[1:]:
        return ""
    key = (
        "model.num_classes"
        if cfg.architecture is not None
        else "the factory's class count (model.factory_kwargs)"
    )
    return f"\nThe checkpoint's last layer has {theirs[0]} outputs, the model's {ours[0]}: set {key} to {theirs[0]}."


#: Block keys of a ViT's encoder and the constructor argument that sets their number (timm, torchvision).
_VIT_BLOCKS = (("blocks.", "depth"), ("encoder.layers.encoder_layer_", "num_layers"))


def _depth_hint(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> str:
    """Name the number of transformer blocks a ViT checkpoint holds (``blocks.<i>.`` in timm,
    ``encoder.layers.encoder_layer_<i>.`` in torchvision); empty for other models."""
    for prefix, arg in _VIT_BLOCKS:
        found = {k[len(prefix) :].split(".", 1)[0] for k in state if k.startswith(prefix)}
        numbers = [int(i) for i in found if i.isdigit()]
        if numbers and ("pos_embed" in state or "encoder.pos_embedding" in state):
            key = _kwargs_field(cfg)
            return f"\nThe checkpoint's ViT has {max(numbers) + 1} blocks: set {key}: {{{arg}: {max(numbers) + 1}}}."
    return ""


def _input_size_hint(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> str:
    """Name the input and patch size a ViT checkpoint was built for, from its position embedding and patch
    projection (timm: ``pos_embed``, ``patch_embed.proj.weight``; torchvision: ``encoder.pos_embedding``,
    ``conv_proj.weight``); empty for other models."""
    pos = next((v for k, v in state.items() if k in ("pos_embed", "encoder.pos_embedding")), None)
    proj = next((v for k, v in state.items() if k in ("patch_embed.proj.weight", "conv_proj.weight")), None)
    if pos is None or proj is None or pos.ndim != 3 or proj.ndim != 4:
        return ""
    patch, tokens = int(proj.shape[-1]), int(pos.shape[1])
    for prefix in (1, 0, 2):  # a class token, none, or class and distillation tokens (DeiT)
        side = math.isqrt(max(tokens - prefix, 0))
        if side and side * side == tokens - prefix:
            size = side * patch
            timm_style = cfg.architecture is None or cfg.architecture.startswith("timm:")
            kwargs = (
                f"img_size: {size}, patch_size: {patch}"
                if timm_style
                else f"image_size: {size}, patch_size: {patch}"
            )
            key = _kwargs_field(cfg)
            return (
                f"\nThe checkpoint's ViT was built for {size}×{size} inputs in {patch}×{patch} patches: set "
                f"{key}: {{{kwargs}}} (and data.transform's resize/center_crop to {size})."
            )
    return ""


def _under_prefix(
    state: dict[str, torch.Tensor], own: set[str], cfg: ModelConfig, optional: set[str] | None = None
) -> tuple[str, dict[str, torch.Tensor]] | None:
    """The part of ``state`` under one key prefix (``model.``, ``net.backbone.``, ``model.module._orig_mod.``)
    whose keys are ``own`` (the ``optional`` ones may be absent): a training framework's checkpoint
    (Lightning keeps the network as an attribute), or None. Several that fit (a student and a teacher, a
    model and its EMA) are refused unless ``model.checkpoint_key`` names one: picking one would audit
    whichever came first."""
    prefixes = {
        ".".join(k.split(".")[:depth]) + "." for k in state for depth in (1, 2, 3) if k.count(".") >= depth
    }
    needed = own - (optional or set())
    fits: dict[str, dict[str, torch.Tensor]] = {}
    for p in sorted(prefixes):
        sub = strip_prefix(state, p)
        # one module shared under two attributes (self.model = self.net) saves the same tensors twice
        if needed <= set(sub) <= own and not any(_same_tensors(sub, other) for other in fits.values()):
            fits[p] = sub
    bare = {k: v for k, v in state.items() if k in own}
    # a network saved without a prefix beside a prefixed one (never a pick of its own: a checkpoint of a
    # deeper network holds a shallower one's keys too)
    beside = fits and all(any(k.startswith(p) for p in fits) for k in set(state) - set(bare))
    if beside and needed <= set(bare) and not any(_same_tensors(bare, other) for other in fits.values()):
        fits = {"": bare, **fits}
    if len(fits) > 1:
        listed = ", ".join(repr(p) if p else "'' (the keys without a prefix)" for p in fits)
        raise ModelError(
            f"The checkpoint {str(cfg.checkpoint)!r} holds {len(fits)} networks that fit the model, under the "
            f"key prefixes {listed} (a student and a teacher, a model and its EMA): say which to audit, e.g. "
            f"model.checkpoint_key: {list(fits)[-1]!r}."
        )
    return next(iter(fits.items()), None)


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two candidate state dicts hold the same tensors under the same keys."""
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def _chosen_prefix(state: dict[str, torch.Tensor], key: str, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The weights under ``model.checkpoint_key`` taken as a key prefix (``student.``; the dot may be left out)."""
    p = key if key.endswith(".") else key + "."
    sub = strip_prefix(state, p)
    if not sub:
        heads = sorted({k.split(".", 1)[0] + "." for k in state if "." in k})
        raise ModelError(
            f"model.checkpoint_key {key!r} is no entry of the checkpoint {str(cfg.checkpoint)!r} and no prefix of "
            f"its keys; its keys begin with {heads[:10]}."
        )
    return sub


def _as_own_keys(
    state: dict[str, torch.Tensor], own: set[str], counters: set[str], cfg: ModelConfig
) -> dict[str, torch.Tensor]:
    """``state`` under the model's own keys (``counters`` may be absent): as saved, without DataParallel's
    ``module.``, with it (a factory returning DataParallel), or the one key prefix that fits; else as saved (the
    caller names the keys that differ)."""

    def matches(s: dict[str, torch.Tensor]) -> bool:
        return own - counters <= set(s) <= own

    if matches(state):
        return state
    # a DDP prefix is dropped unless the model's own keys carry it (a factory returning a wrapper)
    state = without_ddp_prefix(state)
    if matches(state):
        return state
    if own and all(k.startswith("module.") for k in own):
        # the factory returns DataParallel, the checkpoint was saved from the bare network
        wrapped = {f"module.{k}": v for k, v in state.items()}
        if matches(wrapped):
            return wrapped
    if (found := _under_prefix(state, own, cfg, counters)) is not None:
        prefix, state = found
        log.info("checkpoint: took the model's weights from its keys under %r", prefix)
    return state


def _load_state(model: nn.Module, loaded: Any, cfg: ModelConfig) -> None:
    own = model.state_dict()
    # BatchNorm's step counter is no weight: torch fills it in when a checkpoint lacks it
    counters = {k for k in own if k.endswith("num_batches_tracked")}
    key = cfg.checkpoint_key
    state = state_dict_of(loaded, key)
    if key in ("", "."):  # the network saved without a prefix, beside a prefixed one
        state = {k: v for k, v in state.items() if k in own}
    elif key is not None and not (isinstance(loaded, dict) and key in loaded):
        state = _chosen_prefix(state, key, cfg)
    state = _as_own_keys(state, set(own), counters, cfg)
    filled = {**{k: own[k] for k in counters if k not in state}, **state}
    state = filled if set(filled) == set(own) else state  # else the error below names the file's own keys
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if missing or unexpected:
        shapes = f" Shapes that differ too: {[k for k, _, _ in mismatched][:8]}." if mismatched else ""
        twin = (
            cfg.architecture if cfg.architecture and timm_twin_matches(cfg.architecture, set(state)) else None
        )
        sibling = None if twin or not cfg.architecture else sibling_architecture(cfg.architecture, set(state))
        if twin:
            fix = (
                f"Its keys are those of timm's {twin!r}, which torchvision names the same: set "
                f"model.architecture: timm:{twin} (spray init: --model timm:{twin})."
            )
        elif sibling:
            fix = f"Its keys are those of torchvision's {sibling!r}: set model.architecture: {sibling}."
        else:
            fix = (
                "Check model.architecture / model.factory; if the checkpoint's model was built with other "
                f"constructor arguments (a depth, a block count), give them in {_kwargs_field(cfg)} "
                "(spray init: --model-arg KEY=VALUE)."
            )
        raise ModelError(
            f"The checkpoint {str(cfg.checkpoint)!r} is for another model: its keys do not match. "
            f"Missing in checkpoint: {missing[:8]}{'...' if len(missing) > 8 else ''}; "
            f"unexpected in checkpoint: {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}.{shapes} {fix}"
            + _depth_hint(cfg, state)
            + _input_size_hint(cfg, state)
        )
    if mismatched:
        lines = [f"{k}: checkpoint {a} vs model {b}" for k, a, b in mismatched[:10]]
        head = _head_hint(cfg, mismatched)
        message = (
            f"The checkpoint {str(cfg.checkpoint)!r} does not fit the model; shape mismatches:\n  "
            + "\n  ".join(lines)
            + head
            + _input_size_hint(cfg, state)
            + (
                ""
                if head
                else "\nIf the checkpoint's model was built with other constructor arguments (a width, a depth), "
                f"give them in {_kwargs_field(cfg)} (spray init: --model-arg KEY=VALUE)."
            )
        )
        if head:
            _, theirs, ours = mismatched[-1]
            raise ClassCountError(message, theirs[0], ours[0])
        raise ModelError(message)
    model.load_state_dict(state)


def _kwargs_field(cfg: ModelConfig) -> str:
    """Where this config's constructor arguments go: ``model.architecture_kwargs`` or ``model.factory_kwargs``."""
    return "model.architecture_kwargs" if cfg.architecture else "model.factory_kwargs"


def timm_twin_matches(name: str, keys: set[str]) -> bool:
    """Whether timm's architecture of this torchvision name (``efficientnet_b0``, ``convnext_tiny``) has
    exactly these state-dict keys (False without timm or without such a timm name)."""
    if name.startswith("timm:"):
        return False
    try:
        import timm
    except ImportError:
        return False
    if not timm.is_model(name):
        return False
    try:
        twin = timm.create_model(name, pretrained=False, num_classes=2)
    except Exception:  # a timm model that needs arguments: no twin to offer
        return False
    return set(twin.state_dict()) == keys


def sibling_architecture(name: str, keys: set[str]) -> str | None:
    """The torchvision architecture of the same family as ``name`` (``resnet34`` for ``resnet18``) whose
    state-dict keys are exactly ``keys``, if any; built on the meta device, so no memory is taken."""
    import torchvision

    family = re.match(r"[a-z]+", name)
    if family is None or name.startswith("timm:"):
        return None
    for other in torchvision.models.list_models(module=torchvision.models):
        if other == name or not other.startswith(family.group()):
            continue
        try:
            with torch.device("meta"):
                built = torchvision.models.get_model(other, weights=None)
        except Exception:  # an architecture that needs arguments: not a candidate
            continue
        if set(built.state_dict()) == keys:
            return str(other)
    return None


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model and load its checkpoint, in eval mode on the CPU.

    Raises
    ------
    ModelError
        On a missing/unsafe/mismatched checkpoint, or a factory that fails, with the key names and the fix.
    ConfigError
        On an unknown architecture or factory, or arguments they do not take.
    """
    loaded: Any = None
    if cfg.checkpoint is not None:
        loaded = read_checkpoint(Path(cfg.checkpoint), cfg.allow_pickle)
        if isinstance(loaded, dict) and not any(is_weights(v) for v in loaded.values()):
            modules = [v for v in loaded.values() if isinstance(v, nn.Module)]
            loaded = modules[0] if len(modules) == 1 else loaded  # {"model": <pickled module>, "epoch": 3}
        if isinstance(loaded, nn.Module):
            kind = type(uncompiled(loaded))
            named = (
                f"model.architecture {cfg.architecture!r}"
                if cfg.architecture
                else f"model.factory {cfg.factory!r}"
            )
            log.warning(
                "loaded a fully pickled model from %s (allow_pickle is set): a %s.%s; %s is not used (the checkpoint "
                "holds the whole model)",
                cfg.checkpoint, kind.__module__, kind.__qualname__, named,
            )  # fmt: skip
            # a pickled torch.compile wrapper recompiled for every new batch shape of the paste tests
            return as_float32(_select(uncompiled(loaded), cfg).eval())
    model = _architecture(cfg) if cfg.architecture is not None else _factory_model(cfg)
    if loaded is not None:
        _load_state(model, loaded, cfg)
    return as_float32(_select(model, cfg).eval())


def _select(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    return model if cfg.output is None else OutputSelector(model, cfg.output)


__all__ = ["OutputSelector", "build_model", "model_hash", "select_output"]
