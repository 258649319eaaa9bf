"""Reading a checkpoint file: torch.save's formats, safetensors, and the files mistaken for one (an image, an
archive, a Git LFS pointer, a TorchScript archive), each refused with what it is and the fix; the state dict
found inside a training script's dict."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from spray.errors import ModelError

log = logging.getLogger("spray.models")


def is_weights(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and all(isinstance(t, torch.Tensor) for t in v.values())


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def without_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the ``module.`` that DataParallel / DDP put before every key (if they all have it)."""
    if state and all(k.startswith("module.") for k in state):
        return strip_prefix(state, "module.")
    return state


def state_dict_of(obj: Any, entry: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint, its keys as saved (see :func:`without_ddp_prefix`); ``entry``
    (``model.checkpoint_key``) names the dict entry that holds it, when it is one."""
    if isinstance(obj, dict) and entry is not None and entry in obj:
        # the entry named is taken or refused, never passed over for another one
        chosen = obj[entry]
        tensors = (
            {k: v for k, v in chosen.items() if isinstance(v, torch.Tensor)}
            if isinstance(chosen, dict)
            else {}
        )
        if not tensors:
            raise ModelError(
                f"model.checkpoint_key {entry!r} names an entry of the checkpoint that holds no weights (a "
                f"{type(chosen).__name__}); its entries are {list(obj)[:12]}."
            )
        return tensors
    if isinstance(obj, dict):
        any_weights = any(is_weights(v) for v in obj.values())
        for key in ("state_dict", "model_state_dict", "model"):
            # {"model": <its config>, "weights": <state dict>}: a dict that holds no weights is not taken
            if isinstance(obj.get(key), dict) and (is_weights(obj[key]) or not any_weights):
                _warn_other_networks(obj, key)
                obj = obj[key]
                break
        else:
            # A training script's own layout ({'epoch': .., 'optimizer': .., 'net': weights}): the one
            # entry that holds tensors only is the model's.
            held = [k for k, v in obj.items() if is_weights(v)]
            if len(held) == 1 and not is_weights(obj):
                log.info("checkpoint: took the model's weights from its entry %r", held[0])
                obj = obj[held[0]]
            elif not is_weights(obj):
                raise ModelError(
                    f"The checkpoint is a dict with the keys {list(obj)[:12]}, and "
                    f"{'several' if held else 'none'} of them hold only weights{f' ({held[:6]})' if held else ''}"
                    + (
                        f". Say which holds the network: model.checkpoint_key: {held[0]}"
                        if held
                        else ". Save the model's state dict alone (torch.save(model.state_dict(), path)) or under "
                        "'state_dict'."
                    )
                )
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise ModelError(
        f"The checkpoint holds a {type(obj).__name__}, not a state dict. Save it with "
        "torch.save(model.state_dict(), path)."
    )


def _warn_other_networks(obj: dict[str, Any], key: str) -> None:
    """Say which entry is audited when other entries hold weights too (timm's ``state_dict_ema``, a
    ``model_ema``, a teacher): the usual key is timm's and most scripts' choice, but not always the network the
    user deployed."""
    others = [k for k, v in obj.items() if k != key and is_weights(v)]
    if others:
        log.warning(
            "checkpoint: it holds weights under %s besides %r; spray audits %r (the usual convention). If you "
            "deployed another one (an EMA, a teacher), set model.checkpoint_key: %s",
            ", ".join(repr(k) for k in others[:5]),
            key,
            key,
            others[0],
        )


#: How ``torch.save(..., _use_new_zipfile_serialization=False, pickle_protocol=0)`` begins: its magic number.
LEGACY_TEXT_MAGIC = b"L119547037146038801333356"
#: How a file torch.save wrote begins: a zip archive, or in the legacy format a pickle (protocol byte 0x80; with
#: pickle_protocol 0 or 1 its magic number as a text integer).
TORCH_SAVE_STARTS = (b"PK", b"\x80", LEGACY_TEXT_MAGIC)


def _head(path: Path) -> bytes | None:
    """The first bytes of a checkpoint file, or None when it is not a readable file (torch.load says why)."""
    try:
        with path.open("rb") as f:
            return f.read(200)
    except OSError:
        return None


def _not_a_checkpoint(head: bytes) -> str | None:
    """Why a file starting with ``head`` cannot be a PyTorch checkpoint at all (empty, a Git LFS pointer,
    text), or None."""
    if not head:
        return "is empty (0 bytes): save the weights again"
    if head.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the weights: fetch the file (git lfs pull) and point model.checkpoint at it"
    if head.startswith(TORCH_SAVE_STARTS):
        return None
    fix = "point model.checkpoint at the weights (torch.save(model.state_dict(), path))"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"is a text file, not a PyTorch checkpoint: {fix}"
    # any other file was told it "contains pickled Python objects" (torch's weights-only refusal)
    kind = next((what for magic, what in _OTHER_FILES if head.startswith(magic)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "a WebP image"
    # another binary file is left to torch.load (a pickle of an old protocol may still be one)
    return None if kind is None else f"is {kind}, not a PyTorch checkpoint: {fix}"


#: The first bytes of files that are mistaken for a checkpoint (an image, an archive, an array), and what
#: they are.
_OTHER_FILES = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\0", "a TIFF image"),
    (b"MM\0*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"),
    (b"\x93NUMPY", "a NumPy array file (.npy)"),
    (b"\x89HDF", "an HDF5 file (Keras weights?)"),
)


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file: an 8-byte header length, then the JSON header."""
    return head[8:10] == b'{"'


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelError(
            f"Checkpoint {str(path)!r} is a safetensors file: pip install safetensors, or save the weights with "
            "torch.save(model.state_dict(), path)."
        ) from None
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as err:
        raise ModelError(f"Cannot load the safetensors checkpoint {str(path)!r}: {err}") from None


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a zip archive of ``torch.jit.save`` (it holds compiled code, a state dict none)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _weights_only_refusal(path: Path, head: bytes | None) -> str:
    """What torch's weights-only refusal means for ``path``: pickled objects in a file that starts like
    torch.save's, or, for a file that starts like neither of its formats, probably no checkpoint at all
    (advice to allow pickles would mislead there)."""
    if head is not None and not head.startswith(TORCH_SAVE_STARTS):
        return (
            f"Checkpoint {str(path)!r} is probably no PyTorch checkpoint: it starts neither like the zip archive "
            f"nor like the pickle torch.save writes (its first bytes: {head[:8]!r}). Point model.checkpoint at "
            "the weights (torch.save(model.state_dict(), path))."
        )
    return (
        f"Checkpoint {str(path)!r} contains pickled Python objects, which could run arbitrary code when "
        "loaded. Re-save it as a state dict (torch.save(model.state_dict(), path)), or set "
        "model.allow_pickle: true if you trust the file."
    )


def read_checkpoint(path: Path, allow_pickle: bool) -> Any:
    head = _head(path) if path.is_file() else None
    if head is not None and _is_safetensors(head):
        return _load_safetensors(path)
    if head is not None and (why := _not_a_checkpoint(head)) is not None:
        raise ModelError(f"Checkpoint {str(path)!r} {why}.")
    if head is not None and _is_torchscript(path):
        raise ModelError(
            f"Checkpoint {str(path)!r} is a TorchScript archive (torch.jit.save): spray explains a model's Python "
            "layers, which TorchScript compiles away. Save its weights as a state dict, "
            "torch.save(torch.jit.load(path).state_dict(), 'weights.pt'), and give that file as model.checkpoint "
            "with the Python model (model.architecture or model.factory)."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except FileNotFoundError:
        raise ModelError(f"Checkpoint {str(path)!r} does not exist. Fix model.checkpoint.") from None
    except Exception as err:
        if not allow_pickle and "weights_only" in str(err):
            raise ModelError(_weights_only_refusal(path, head)) from None
        if (
            isinstance(err, EOFError | OSError)
            or "central directory" in str(err)
            or "zip archive" in str(err)
        ):
            raise ModelError(
                f"Cannot load checkpoint {str(path)!r}: the file is truncated or damaged "
                f"({type(err).__name__}: {err}). Copy or save it again."
            ) from None
        raise ModelError(f"Cannot load checkpoint {str(path)!r}: {type(err).__name__}: {err}") from None


def checkpoint_keys(path: Path) -> set[str] | None:
    """The state-dict keys of a checkpoint file (None when it cannot be read as a plain state dict)."""
    try:
        return set(without_ddp_prefix(state_dict_of(read_checkpoint(path, allow_pickle=False))))
    except ModelError:
        return None
