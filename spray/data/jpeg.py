"""JPEG files decoded in batches by torchvision, on the CUDA device (nvJPEG) or on the CPU.

``data.transform.decode_device`` picks the decoder of an image folder's JPEG files:

- ``cpu`` (default): Pillow, in the DataLoader's worker processes (:func:`spray.data.decoding.decode_image`), like
  every other format.
- ``cuda``: the workers only read and hash the bytes; the main process decodes a whole batch at once
  with ``torchvision.io.decode_jpeg(..., device="cuda")`` and resizes, crops, thumbnails and normalises it
  on the device (:class:`JpegDecoder`). Files the device path does not take (other formats, CMYK, a JPEG
  above ``data.max_image_pixels``, which Pillow decodes at reduced scale) still go through Pillow.
- ``auto``: ``cuda`` when the batch stage runs on CUDA and the data are an image folder, else
  ``cpu``. The run records the decoder it used (``config.data.transform.decode_device`` and
  ``timings.decode_device``).

Decoders differ: nvJPEG's inverse DCT and chroma upsampling are not libjpeg-turbo's, and the device's
resize rounds differently from the CPU's, so the same file gives slightly different pixels (documented
in docs/batch_stage.md; the CPU resizes 8-bit pixels with Pillow itself, the device emulates it). The decoder is therefore part of the heatmap cache key (``cuda`` appears in the
transform settings of :func:`spray.runs.identity.heatmap_settings`): a cached heatmap never mixes
decoders. The same batched code run on the CPU (torchvision's libjpeg-turbo) gives Pillow's pixels bit
for bit (tests/test_cuda_decode.py), which is how its CPU half is tested without a GPU.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image

from spray.data.decoding import DecodeOptions, _pillow_size_check_off
from spray.errors import ConfigError

log = logging.getLogger(__name__)

DecodeDevice = Literal["cpu", "cuda"]

#: Pillow modes of the JPEG files the device path decodes: 8-bit grey and YCbCr/RGB colour (CMYK and
#: YCCK files go through Pillow, whose CMYK conversion spray has always used).
DEVICE_MODES = frozenset({"L", "RGB"})


def resolve_decode_device(setting: str, kind: str, batch_device: torch.device) -> DecodeDevice:
    """The decoder a run uses: ``setting`` (``data.transform.decode_device``) with ``auto`` resolved.

    Parameters
    ----------
    setting : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    kind : str
        ``data.kind``; only image folders hold JPEG files of their own.
    batch_device : torch.device
        Where the batch stage runs.

    Raises
    ------
    ConfigError
        ``cuda`` without a CUDA device, or with a torchvision built without nvJPEG.
    """
    if setting == "cpu":
        return "cpu"
    if setting == "auto":
        use = batch_device.type == "cuda" and kind == "image_folder" and nvjpeg_available()
        return "cuda" if use else "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(
            "data.transform.decode_device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'."
        )
    if not nvjpeg_available():
        raise ConfigError(
            "data.transform.decode_device is 'cuda' but this torchvision cannot decode JPEG on the GPU "
            "(built without nvJPEG); install a CUDA build of torchvision, or use 'auto' or 'cpu'."
        )
    return "cuda"


def nvjpeg_available() -> bool:
    """CUDA is available and torchvision decodes JPEG on it (a one-pixel probe, once per process)."""
    global _NVJPEG
    if _NVJPEG is None:
        _NVJPEG = False
        if torch.cuda.is_available():
            try:
                _decode_jpeg(
                    [torch.frombuffer(bytearray(_probe_jpeg()), dtype=torch.uint8)], torch.device("cuda")
                )
                _NVJPEG = True
            except Exception as err:  # an old or CPU-only torchvision: stay on the CPU
                log.info(
                    "torchvision cannot decode JPEG on the GPU (%s): JPEG files are decoded by Pillow", err
                )
    return _NVJPEG


_NVJPEG: bool | None = None


def _probe_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 64, 32)).save(buf, "JPEG")
    return buf.getvalue()


def device_decodable(raw: bytes, opts: DecodeOptions) -> bool:
    """Whether the device path takes this file: a JPEG in :data:`DEVICE_MODES` within ``opts.max_pixels``
    that ends with its end-of-image marker (from the header and the last bytes only). Anything else, or
    a file Pillow cannot identify, goes through Pillow, which gives the reason when it is unreadable: a
    truncated file is skipped as "truncated" whichever decoder was chosen."""
    if not raw.rstrip(b"\0").endswith(b"\xff\xd9"):
        return False
    try:
        with _pillow_size_check_off(), Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
            return im.format == "JPEG" and im.mode in DEVICE_MODES and 0 < w * h <= opts.max_pixels
    except Exception:
        return False


@dataclass
class JpegDecoder:
    """Batched JPEG decoding with torchvision on one device.

    Attributes
    ----------
    device : torch.device
        ``cuda`` in an audit; ``cpu`` runs the same code with torchvision's libjpeg-turbo (tests).
    opts : DecodeOptions
        The pixel limit the device path respects.
    """

    device: torch.device
    opts: DecodeOptions

    def accepts(self, raw: bytes) -> bool:
        """See :func:`device_decodable`."""
        return device_decodable(raw, self.opts)

    def decode(self, encoded: list[torch.Tensor]) -> list[torch.Tensor | str]:
        """Decode a batch of files.

        Parameters
        ----------
        encoded : list[torch.Tensor]
            The files' bytes, each a 1-D uint8 CPU tensor.

        Returns
        -------
        list
            Per file a ``(C, H, W)`` float32 tensor in [0, 1] on :attr:`device` (C 1 for grey, 3 for
            colour), or the reason it cannot be decoded (the sample is skipped with it).
        """
        if not encoded:
            return []
        try:
            images = _decode_jpeg(encoded, self.device)
        except RuntimeError as err:
            if isinstance(err, torch.cuda.OutOfMemoryError):
                raise
            # One bad file fails the whole batched call: decode one by one to find it.
            return [self._one(e) for e in encoded]
        return [self._to_float(im) for im in images]

    def _one(self, data: torch.Tensor) -> torch.Tensor | str:
        try:
            return self._to_float(_decode_jpeg([data], self.device)[0])
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as err:
            return f"corrupt or truncated JPEG ({self.device.type} decoder: {str(err).splitlines()[0]})"

    @staticmethod
    def _to_float(im: torch.Tensor) -> torch.Tensor:
        # The same division as the Pillow path (uint8 -> float32 / 255), so the CPU halves agree bit for bit.
        return im.float() / 255.0


def _decode_jpeg(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """``torchvision.io.decode_jpeg`` on a list, each image as stored (1 or 3 channels, uint8)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they work, and the warning
        # would repeat for every batch (docs/batch_stage.md notes the move).
        warnings.filterwarnings(
            "ignore", message="The image decoding and encoding", category=DeprecationWarning
        )
        return list(decode_jpeg(encoded, mode=ImageReadMode.UNCHANGED, device=device))
