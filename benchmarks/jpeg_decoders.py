"""nvJPEG (``data.transform.decode_device: cuda``) against libjpeg-turbo (Pillow's decoder), per JPEG encoding.

Both sides run spray's batched decoder (:class:`spray.data.jpeg.JpegDecoder`) on the same files: once on the
GPU, once on the CPU (torchvision's libjpeg-turbo, which gives Pillow's pixels bit for bit,
``tests/test_cuda_decode.py``). Images: the test suite's synthetic photos (gradients, sharp-edged discs,
noise) and scikit-image's sample photos when scikit-image is installed, each encoded with the test suite's
five encodings (4:4:4, 4:2:2, 4:2:0, progressive, optimised). Differences are in 1/255 per pixel: RGB,
JFIF luma and chroma (Cb, Cr).

Usage (on a GPU machine; the figures in docs/batch_stage.md)::

    python benchmarks/jpeg_decoders.py --json benchmarks/results/jpeg_nvjpeg_vs_libjpeg_<machine>_<date>.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spray.data.decoding import DecodeOptions
from spray.data.jpeg import JpegDecoder
from tests.test_cuda_decode import ENCODINGS, _jpeg, _luma, _photo


def ycc(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """JFIF Y, Cb, Cr (0..255, chroma centred on 0) of a ``(3, H, W)`` image in [0, 1] (Y: the test's luma)."""
    r, g, b = (rgb * 255).double()
    y = _luma(rgb.double()) * 255
    return y, -0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b


def photos() -> dict[str, list[np.ndarray]]:
    """``{source: [(H, W, 3) uint8 image, ...]}``."""
    out = {"synthetic": [_photo(40 + 7 * i, 52 - 3 * i, i) for i in range(6)]}
    try:
        import skimage.data as sd

        out["skimage"] = [np.asarray(getattr(sd, n)()) for n in ("astronaut", "chelsea", "coffee", "rocket")]
    except ImportError:
        print("scikit-image is not installed: synthetic photos only")
    return out


def stats(values: torch.Tensor) -> dict[str, float]:
    """Max, mean and 99.9th percentile (of the first million values) of absolute differences."""
    return {
        "max": float(values.max()),
        "mean": float(values.mean()),
        "p999": float(torch.quantile(values[:1_000_000], 0.999)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="the decoder to compare with the CPU's")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    device, out = torch.device(args.device), {}
    for source, images in photos().items():
        for encoding, kw in ENCODINGS.items():
            files = [torch.frombuffer(bytearray(_jpeg(a, **kw)), dtype=torch.uint8) for a in images]
            got = JpegDecoder(device, DecodeOptions()).decode(files)
            ref = JpegDecoder(torch.device("cpu"), DecodeOptions()).decode(files)
            rgb, luma, chroma = [], [], []
            for a, b in zip(got, ref, strict=True):
                assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                a = a.cpu()
                rgb.append(((a - b).abs() * 255).double().flatten())
                (ya, cba, cra), (yb, cbb, crb) = ycc(a), ycc(b)
                luma.append((ya - yb).abs().flatten())
                chroma += [(cba - cbb).abs().flatten(), (cra - crb).abs().flatten()]
            row = {
                name: stats(torch.cat(v)) for name, v in (("rgb", rgb), ("luma", luma), ("chroma", chroma))
            }
            out[f"{source}/{encoding}"] = row
            print(
                f"{source:9s} {encoding:12s} "
                + "  ".join(
                    f"{k} max {r['max']:.1f} mean {r['mean']:.3f} p99.9 {r['p999']:.1f}"
                    for k, r in row.items()
                )
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
