"""Peak memory of reading one very large image for a small model: spray's decoder vs a full decode.

    python benchmarks/large_image.py --side 12000

Writes a ``side × side`` RGB PNG and JPEG into a temporary folder, then, each in a fresh process:
``full`` decodes the file completely and resizes it to 28×28 (what spray did before ``data.max_image_pixels``);
``spray`` is spray's decoder with the default limit; ``spray-resize`` the same with ``transform.resize: 28``
(a JPEG is then decoded at 1/8 scale). Prints the outcome, seconds and the process's peak RSS (torch
imported in every case).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(mode: str, path: Path) -> str:
    raw = path.read_bytes()
    t0 = time.perf_counter()
    if mode == "full":
        import io

        import numpy as np
        import torch
        import torch.nn.functional as F
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
        out: object = tuple(F.interpolate(t[None], size=(28, 28), mode="bilinear", antialias=True).shape)
    else:
        from spray.data import DecodeOptions, UnreadableSample, decode_image

        try:
            opts = DecodeOptions(draft_side=28 if mode == "spray-resize" else None)
            out = tuple(decode_image(raw, opts).shape)
        except UnreadableSample as err:
            out = f"skipped ({err.reason})"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return f"{mode:13s} {path.suffix:5s} {time.perf_counter() - t0:6.2f} s  peak RSS {rss:6.0f} MB  {out}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--side", type=int, default=12000)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(_one(args.one[0], Path(args.one[1])))
        return
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        im = Image.new("RGB", (args.side, args.side), (30, 60, 90))
        files = [Path(tmp) / "big.png", Path(tmp) / "big.jpg"]
        for f in files:
            im.save(f)
        del im
        for mode in ("full", "spray", "spray-resize"):
            for f in files:
                subprocess.run([sys.executable, __file__, "--one", mode, str(f)], check=True)


if __name__ == "__main__":
    main()
