"""JPEG decoding in batches with torchvision (spray/data/jpeg.py): the CPU half here, the CUDA half on a GPU.

The device path (``data.transform.decode_device: cuda``) leaves JPEG files undecoded in the loader's
workers and decodes each batch in the main process with ``torchvision.io.decode_jpeg``, then resizes,
crops, thumbnails and normalises it with the same tensor code as the Pillow path. Run on the CPU, the
same code uses torchvision's libjpeg-turbo, which gives Pillow's pixels bit for bit (measured on
baseline 4:4:4, 4:2:2 and 4:2:0, progressive, optimised and grey files: max abs diff 0), so the CPU
tests demand identical tensors, thumbnails and skipped samples. The CUDA tests (skipped without a GPU)
measure nvJPEG against that reference and run an audit with it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from spray.config import AuditConfig, DataConfig
from spray.data import AuditDataset, build_dataset, collate_samples
from spray.data.decoding import DecodeOptions, decode_image
from spray.data.jpeg import JpegDecoder, device_decodable, resolve_decode_device
from spray.errors import ConfigError
from spray.runs.identity import heatmap_settings

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like RGB image: smooth gradients, a few sharp-edged shapes and sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 200 + 30, yy / h * 180 + 40, (xx + yy) / (h + w) * 220 + 10], -1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, min(h, w) / 3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _jpeg(arr: np.ndarray, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()


#: Encodings the device path must take; every one decodes to Pillow's pixels on the CPU.
ENCODINGS: dict[str, dict[str, Any]] = {
    "444": {"quality": 92, "subsampling": 0},
    "422": {"quality": 85, "subsampling": 1},
    "420": {"quality": 75, "subsampling": 2},
    "progressive": {"quality": 85, "progressive": True},
    "optimised": {"quality": 60, "optimize": True},
}


def make_jpeg_folder(root: Path) -> dict[str, str]:
    """``root/<class>/<file>``: JPEGs of several sizes and encodings, a grey JPEG, a PNG, a CMYK JPEG and a
    truncated JPEG. Returns what each odd file is (by sample id)."""
    odd = {}
    for c, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i, (name, kw) in enumerate(ENCODINGS.items()):
            h, w = 40 + 7 * i, 52 - 3 * i + c
            (root / cls / f"{name}.jpg").write_bytes(_jpeg(_photo(h, w, 10 * c + i), **kw))
    grey = _photo(45, 45, 99)[..., 0]
    (root / "cat" / "grey.jpg").write_bytes(_jpeg(grey, quality=90))
    Image.fromarray(_photo(44, 50, 7)).save(root / "dog" / "plain.png")
    buf = io.BytesIO()
    Image.fromarray(_photo(48, 48, 8)).convert("CMYK").save(buf, "JPEG")
    (root / "dog" / "cmyk.jpg").write_bytes(buf.getvalue())
    whole = _jpeg(_photo(50, 50, 9))
    (root / "dog" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    odd.update({"cat/grey.jpg": "grey", "dog/plain.png": "png", "dog/cmyk.jpg": "cmyk"})
    odd["dog/truncated.jpg"] = "truncated"
    return odd


def _data_cfg(root: Path) -> DataConfig:
    return DataConfig.model_validate(
        {
            "kind": "image_folder",
            "path": str(root),
            "transform": {
                "resize": 36,
                "center_crop": 32,
                "channels": 3,
                "mean": [0.5] * 3,
                "std": [0.25] * 3,
            },
        }
    )


def _load_all(ds: AuditDataset, workers: int) -> tuple[list[str], torch.Tensor, np.ndarray, dict[str, str]]:
    """Every batch of the dataset through a DataLoader and ``finish_batch``, as the batch stage reads it."""
    batches = [list(range(s, min(s + 4, len(ds)))) for s in range(0, len(ds), 4)]
    ids, xs, thumbs, skipped = [], [], [], {}
    loader = DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=collate_samples)
    for raw_batch in loader:
        b = ds.finish_batch(raw_batch)
        assert not b.pending and b.decoded == list(range(len(b.sample_ids)))
        ids += b.sample_ids
        assert b.x is not None and b.thumbnails is not None
        xs.append(b.x.cpu())
        thumbs.append(b.thumbnails)
        skipped.update({s.sample_id: s.reason for s in b.skipped})
    return ids, torch.cat(xs), np.concatenate(thumbs), skipped


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jpegs") / "imgs"
    make_jpeg_folder(root)
    return root


# ---------------------------------------------------------------------------------------------------------
# The CPU half (always runs)


@pytest.mark.parametrize("encoding", [*ENCODINGS, "grey"])
def test_torchvision_cpu_decode_equals_pillow_bit_for_bit(encoding: str) -> None:
    arr = _photo(61, 83, 1)
    raw = _jpeg(arr[..., 0], quality=90) if encoding == "grey" else _jpeg(arr, **ENCODINGS[encoding])
    assert device_decodable(raw, DecodeOptions())
    (got,) = JpegDecoder(torch.device("cpu"), DecodeOptions()).decode(
        [torch.frombuffer(bytearray(raw), dtype=torch.uint8)]
    )
    ref = decode_image(raw, DecodeOptions())
    assert isinstance(got, torch.Tensor) and got.dtype == ref.dtype and got.shape == ref.shape
    assert torch.equal(got, ref), float((got - ref).abs().max())


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_decoding_gives_the_pillow_path_s_inputs_thumbnails_and_skips(
    folder: Path, workers: int
) -> None:
    ref = build_dataset(_data_cfg(folder), thumbnail_size=16)
    dev = build_dataset(_data_cfg(folder), thumbnail_size=16, jpeg_device=torch.device("cpu"))
    assert ref.jpeg is None and dev.jpeg is not None
    ids_r, x_r, th_r, sk_r = _load_all(ref, workers)
    ids_d, x_d, th_d, sk_d = _load_all(dev, workers)
    assert ids_d == ids_r and len(ids_r) == 13 and set(sk_r) == set(sk_d) == {"dog/truncated.jpg"}
    assert "truncated" in sk_d["dog/truncated.jpg"]
    assert torch.equal(x_d, x_r) and np.array_equal(th_d, th_r)
    # The 11 JPEGs in grey or colour were decoded by torchvision, in batches when workers read the files
    # (the PNG, the CMYK file and the truncated one went through Pillow).
    assert dev.n_device_decoded == 11 and ref.n_device_decoded == 0


def test_the_paste_test_and_setup_paths_decode_alike(folder: Path) -> None:
    """``load_input`` and ``first_batch`` (the main process, no loader) use the same decoder."""
    ref = build_dataset(_data_cfg(folder), thumbnail_size=16)
    dev = build_dataset(_data_cfg(folder), thumbnail_size=16, jpeg_device=torch.device("cpu"))
    for i in range(len(ref)):
        if ref.sample_ids[i] != "dog/truncated.jpg":
            assert torch.equal(dev.load_input(i), ref.load_input(i))
    assert torch.equal(dev.first_batch(3).x, ref.first_batch(3).x)  # type: ignore[arg-type]
    assert dev.n_device_decoded > 0


def test_known_samples_are_not_decoded_by_either_path(folder: Path) -> None:
    dev = build_dataset(_data_cfg(folder), thumbnail_size=16, jpeg_device=torch.device("cpu"))
    first = dev[0]
    dev.known_hashes = frozenset({first.content_hash})  # type: ignore[union-attr]
    loader = DataLoader(dev, batch_sampler=[[0, 1]], num_workers=1, collate_fn=collate_samples)
    (b,) = [dev.finish_batch(raw) for raw in loader]
    assert b.decoded == [1] and b.x is not None and len(b.x) == 1


def test_what_the_device_path_takes() -> None:
    arr = _photo(40, 40, 3)
    opts = DecodeOptions(max_pixels=40 * 40)
    assert device_decodable(_jpeg(arr), opts)
    assert device_decodable(_jpeg(arr) + b"\0\0", opts)  # padding after the end-of-image marker
    assert not device_decodable(_jpeg(arr)[:-10], opts)  # truncated: Pillow names it
    assert not device_decodable(_jpeg(_photo(41, 40, 3)), opts)  # above the pixel cap: Pillow's draft
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    assert not device_decodable(buf.getvalue(), opts)
    assert not device_decodable(b"\xff\xd8garbage\xff\xd9", opts)


def test_decode_device_resolution_and_the_cache_key() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_decode_device("cpu", "image_folder", gpu) == "cpu"
    assert resolve_decode_device("auto", "image_folder", cpu) == "cpu"
    assert resolve_decode_device("auto", "idx", gpu) == "cpu"  # IDX and factory data hold no JPEG files
    if not torch.cuda.is_available():
        assert resolve_decode_device("auto", "image_folder", gpu) == "cpu"
        with pytest.raises(ConfigError, match="decode_device is 'cuda' but no CUDA device"):
            resolve_decode_device("cuda", "image_folder", cpu)
    raw = {
        "model": {"architecture": "resnet18", "num_classes": 2},
        "data": {"kind": "image_folder", "path": "."},
    }
    cfg = AuditConfig.model_validate(raw)
    cfg.data.transform.decode_device = "cpu"
    # Pillow leaves the cache key and run id of every existing run as they were: not in the dump.
    assert "decode_device" not in json.dumps(heatmap_settings(cfg))
    before = json.dumps(heatmap_settings(cfg), sort_keys=True)
    cfg.data.transform.decode_device = "cuda"
    assert json.dumps(heatmap_settings(cfg), sort_keys=True) != before


# ---------------------------------------------------------------------------------------------------------
# The CUDA half (a GPU machine)


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """JFIF luma of a ``(3, H, W)`` image (any grey image is its own luma)."""
    if rgb.shape[0] == 1:
        return rgb[0]
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


@needs_cuda
def test_nvjpeg_against_libjpeg_turbo(folder: Path) -> None:
    """nvJPEG's pixels against the CPU's, and the full device path (decode, resize, crop, normalise).

    Measured on an NVIDIA H200 (torch 2.11, 4 Dec 2026; docs/batch_stage.md): without chroma subsampling
    the two decoders give the same 8-bit values; with 4:2:2 or 4:2:0 nvJPEG upsamples the
    chroma otherwise (libjpeg-turbo interpolates), which moves colours at sharp colour edges by up to
    81/255 on this folder (mean 2.3/255; 0.5/255 on scikit-image's photos) and luma little.
    """
    files = sorted(p for p in folder.rglob("*.jpg") if device_decodable(p.read_bytes(), DecodeOptions()))
    enc = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    gpu = JpegDecoder(torch.device("cuda"), DecodeOptions()).decode(enc)
    cpu = JpegDecoder(torch.device("cpu"), DecodeOptions()).decode(enc)
    diffs, luma, full_chroma = [], [], []
    for path, g, c in zip(files, gpu, cpu, strict=True):
        assert isinstance(g, torch.Tensor) and isinstance(c, torch.Tensor)
        assert g.device.type == "cuda" and g.shape == c.shape
        diffs.append((g.cpu() - c).abs())
        luma.append((_luma(g.cpu()) - _luma(c)).abs())
        if path.stem == "444":  # no chroma subsampling: the same 8-bit values
            full_chroma.append(float(diffs[-1].max()) * 255)
    worst = max(float(d.max()) for d in diffs) * 255
    mean = float(torch.cat([d.flatten() for d in diffs]).mean()) * 255
    luma_worst = max(float(d.max()) for d in luma) * 255
    luma_mean = float(torch.cat([d.flatten() for d in luma]).mean()) * 255
    print(f"nvJPEG vs libjpeg-turbo: max {worst:.0f}/255, mean {mean:.3f}/255; luma max {luma_worst:.1f}, "
          f"mean {luma_mean:.3f}; 4:4:4 max {full_chroma}")  # fmt: skip
    # Bounds about 1.2x the measured figures: a wrong colour conversion or a shifted image is far above.
    assert worst <= 96 and mean <= 3.0 and luma_mean <= 0.5 and luma_worst <= 16
    assert len(full_chroma) == 2 and max(full_chroma) < 0.01  # measured 1.5e-5: float32 rounding of /255

    ref = build_dataset(_data_cfg(folder), thumbnail_size=16)
    dev = build_dataset(_data_cfg(folder), thumbnail_size=16, jpeg_device=torch.device("cuda"))
    ids_r, x_r, th_r, sk_r = _load_all(ref, 2)
    ids_d, x_d, th_d, sk_d = _load_all(dev, 2)
    assert ids_d == ids_r and set(sk_d) == set(sk_r) and dev.n_device_decoded == 11
    # One sample at a time (the paste test, the setup check) comes back to the host.
    assert dev.load_input(0).device.type == "cpu" and dev[0].x.device.type == "cpu"  # type: ignore[union-attr]
    # Inputs are normalised with std 0.25: 4 units per unit of intensity.
    assert float((x_d - x_r).abs().max()) <= 4 * 96 / 255
    assert int(np.abs(th_d.astype(int) - th_r.astype(int)).max()) <= 96


@needs_cuda
def test_cuda_audit_records_the_decoder_and_keeps_its_own_cache(folder: Path, tmp_path: Path) -> None:
    from spray.audit import run_audit
    from spray.runs.reader import RunReader

    def cfg(decode: str) -> AuditConfig:
        return AuditConfig.model_validate(
            {
                "model": {
                    "factory": "spray.lab.cnn:small_cnn",
                    "factory_kwargs": {"in_channels": 3, "num_classes": 2},
                },
                "data": {
                    **_data_cfg(folder).model_dump(mode="json"),
                    "transform": {
                        **_data_cfg(folder).transform.model_dump(mode="json"),
                        # The small CNN takes 28×28 inputs.
                        "resize": 32,
                        "center_crop": 28,
                        "decode_device": decode,
                    },
                },
                "batch": {"device": "cuda", "num_workers": 2, "batch_size": 4},
                "analysis": {"embedding": "spectral", "min_class_size": 3, "n_neighbors": 3, "k_max": 3},
                "scoring": {"intervention_samples": 4},
                "output": {"runs_dir": str(tmp_path / "runs")},
            }
        )

    gpu = run_audit(cfg("auto"), progress=False)
    cpu = run_audit(cfg("cpu"), progress=False)
    assert gpu.timings["decode_device"] == "cuda" and gpu.timings["n_device_decoded"] == 11
    assert cpu.timings["decode_device"] == "cpu" and cpu.timings["n_device_decoded"] == 0
    assert gpu.config["data"]["transform"]["decode_device"] == "cuda"
    assert gpu.cache != cpu.cache and gpu.run_id != cpu.run_id  # decoders never share a cached heatmap
    a, b = RunReader.open(gpu.run_dir).heatmaps(), RunReader.open(cpu.run_dir).heatmaps()
    assert a.shape == b.shape
    cos = (a.astype(np.float32).reshape(len(a), -1) * b.astype(np.float32).reshape(len(b), -1)).sum(1)
    cos /= np.linalg.norm(a.astype(np.float32).reshape(len(a), -1), axis=1) * np.linalg.norm(
        b.astype(np.float32).reshape(len(b), -1), axis=1
    )
    # Random weights on sharp-edged synthetic photos: measured min 0.948 on an H200 (the chroma edges above).
    assert float(cos.min()) >= 0.9, cos
