"""Fault suite, data: one bad sample never stops a run; a bad dataset stops it before any work, by name.

One real ``spray audit`` (a child process, as a scheduler runs it) over an image folder with a zoo of bad
and odd files: every odd mode is converted, every bad file is skipped and listed in ``summary.json`` with
its reason, the run exits 0. The other cases stop at setup and are run in this process.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from spray.data import write_idx
from tests.faults.cli import CliResult, assert_clean_failure, run_main, run_spray
from tests.faults.test_config_faults import base_config, write
from tests.helpers import make_image_folder

# file -> what its skip reason must say
SKIPPED = {
    "cat/odd_30x30.png": "30×30 pixels",
    "cat/huge.png": "max_image_pixels",
    "cat/float_out_of_range.tif": "outside [0, 1]",
    "cat/int32.tif": "32-bit integer pixels",
    "dog/truncated.png": "corrupt or truncated",
    "dog/garbage.jpg": "corrupt or not an image",
    "dog/notes.txt": "not an image file",
    # an outside check: a JPEG named .jfif was called "not an image file" (skipped as ImageFolder skips it)
    "dog/photo.jfif": "an image, but extension '.jfif' is not one torchvision's ImageFolder lists",
    "dog/loop": "symlink loop",
    "dog/dangling.png": "broken symlink",
}
# files in modes other than RGB that are converted and explained
CONVERTED = [
    "cat/grey.png",
    "cat/cmyk.jpg",
    "cat/palette.gif",
    "cat/rgba.png",
    "dog/la.png",
    "dog/bits.png",
    "dog/deep16.png",
]


def _zoo(root: Path) -> None:
    make_image_folder(root, n_per_class=8, size=28)
    (root / "zz_empty").mkdir()
    Image.fromarray(np.full((30, 30, 3), 9, np.uint8)).save(root / "cat" / "odd_30x30.png")
    Image.new("L", (1200, 1000)).save(root / "cat" / "huge.png")
    Image.fromarray(np.full((28, 28), 7.5, np.float32)).save(root / "cat" / "float_out_of_range.tif")
    Image.fromarray(np.full((28, 28), 10**6, np.int32)).save(root / "cat" / "int32.tif")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(buf, "PNG")
    (root / "dog" / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "dog" / "garbage.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "dog" / "notes.txt").write_text("labelling notes")
    Image.new("RGB", (16, 16)).save(root / "dog" / "photo.jfif", format="JPEG")
    os.symlink("..", root / "dog" / "loop")
    os.symlink(root / "missing.png", root / "dog" / "dangling.png")
    Image.new("L", (28, 28), 100).save(root / "cat" / "grey.png")
    Image.new("CMYK", (28, 28), (0, 200, 200, 0)).save(root / "cat" / "cmyk.jpg")
    Image.new("RGB", (28, 28), (10, 200, 30)).convert("P").save(root / "cat" / "palette.gif")
    Image.new("RGBA", (28, 28), (10, 20, 30, 40)).save(root / "cat" / "rgba.png")
    Image.new("LA", (28, 28), (50, 255)).save(root / "dog" / "la.png")
    Image.new("1", (28, 28), 1).save(root / "dog" / "bits.png")
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) * 80).astype(np.uint16)).save(
        root / "dog" / "deep16.png"
    )


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[CliResult, dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("zoo")
    _zoo(tmp / "imgs")
    raw = base_config(tmp)
    raw["model"]["factory_kwargs"]["num_classes"] = 3
    raw["data"]["max_image_pixels"] = 1_000_000
    raw["analysis"].update(min_class_size=3, k_max=3, n_neighbors=4)
    raw["scoring"] = {"intervention": False}
    cfg = write(tmp, raw)
    result = run_spray(["audit", "--config", str(cfg), "-q"], timeout=600)
    summaries = list((tmp / "runs").glob("2*/summary.json"))
    summary = json.loads(summaries[0].read_text()) if summaries else {}
    return result, summary, summaries[0].parent if summaries else tmp


@pytest.mark.parametrize(("sample_id", "reason"), list(SKIPPED.items()), ids=list(SKIPPED))
def test_bad_file_is_skipped_named_and_listed(
    zoo_run: tuple[CliResult, dict[str, Any], Path], sample_id: str, reason: str
) -> None:
    result, summary, _ = zoo_run
    assert result.code == 0 and "Traceback" not in result.output, result.output
    listed = {s["sample_id"]: s["reason"] for s in summary["skipped"]}
    assert reason in listed[sample_id], listed[sample_id]
    assert "BytesIO" not in listed[sample_id]
    assert f"skipped sample {sample_id}" in result.stderr  # named in the log as well


@pytest.mark.parametrize("sample_id", CONVERTED)
def test_odd_mode_is_converted_and_explained(
    zoo_run: tuple[CliResult, dict[str, Any], Path], sample_id: str
) -> None:
    result, summary, run_dir = zoo_run
    assert result.code == 0
    assert sample_id not in {s["sample_id"] for s in summary["skipped"]}
    assert sample_id in set(pd.read_parquet(run_dir / "samples.parquet")["sample_id"])


def test_zoo_run_warns_of_the_empty_class_folder_and_is_quiet(
    zoo_run: tuple[CliResult, dict[str, Any], Path],
) -> None:
    result, _, run_dir = zoo_run
    assert result.code == 0 and "zz_empty" in result.stderr and " INFO " not in result.stderr
    thumbs = np.load(run_dir / "thumbs.npy")
    assert thumbs.shape[1:] == (28, 28, 3)  # sized from the 28×28 input, not the 64 cap


# --- datasets that cannot be audited: stop at setup, name the file -----------------------------------------

Setup = Callable[[dict[str, Any], Path], None]


def _idx(
    images: np.ndarray | bytes, labels: np.ndarray | bytes, class_names: list[str] | None = None
) -> Setup:
    def apply(raw: dict[str, Any], tmp: Path) -> None:
        for name, arr in (("imgs.idx", images), ("labs.idx", labels)):
            if isinstance(arr, bytes):
                (tmp / name).write_bytes(arr)
            else:
                write_idx(tmp / name, arr)
        raw["data"] = {"kind": "idx", "images": "imgs.idx", "labels": "labs.idx"}
        if class_names:
            raw["data"]["class_names"] = class_names
        raw["model"]["factory_kwargs"]["in_channels"] = 1

    return apply


def _int8_labels(values: list[int]) -> bytes:
    return bytes([0, 0, 0x09, 1]) + struct.pack(">I", len(values)) + np.array(values, np.int8).tobytes()


def _factory(body: str) -> Setup:
    def apply(raw: dict[str, Any], tmp: Path) -> None:
        (tmp / "fault_ds.py").write_text("import numpy as np\n" + body)
        raw["data"] = {"kind": "factory", "factory": "fault_ds:build"}

    return apply


def _folder(setup: Callable[[Path], None]) -> Setup:
    def apply(raw: dict[str, Any], tmp: Path) -> None:
        root = tmp / "other"
        root.mkdir()
        setup(root)
        raw["data"]["path"] = "other"

    return apply


def _many_sizes(root: Path) -> None:
    for i, size in enumerate((20, 24, 28, 32)):
        make_image_folder(root, n_per_class=1, classes=(f"c{i % 2}",), size=size)
        for p in (root / f"c{i % 2}").glob("000.png"):
            p.rename(p.with_name(f"{size}.png"))


def _all_garbage(root: Path) -> None:
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(2):
            (root / c / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")


def _set_transform(transform: dict[str, Any]) -> Setup:
    def apply(raw: dict[str, Any], tmp: Path) -> None:
        raw["data"]["transform"] = transform
        raw["model"]["factory_kwargs"]["in_channels"] = 1

    return apply


_GOOD = np.zeros((6, 28, 28), np.uint8)
_ITEM = "np.zeros((28, 28, 3), np.uint8)"

SETUP_CASES: list[tuple[str, Setup, int, tuple[str, ...]]] = [
    (
        "idx-label-out-of-range",
        _idx(_GOOD, np.array([0, 1, 0, 1, 7, 1], np.uint8), ["a", "b"]),
        1,
        ("data.labels", "labs.idx", "label 7 of sample 4"),
    ),
    (
        "idx-negative-label",
        _idx(_GOOD, _int8_labels([0, 1, -3, 1, 0, 1])),
        1,
        ("data.labels", "labs.idx", "label -3 of sample 2"),
    ),
    ("idx-not-idx", _idx(b"GIF89a not idx", np.zeros(6, np.uint8)), 1, ("imgs.idx", "not an IDX file")),
    (
        "idx-truncated",
        _idx(bytes([0, 0, 8, 3]) + struct.pack(">III", 6, 28, 28) + b"\0" * 100, np.zeros(6, np.uint8)),
        1,
        ("imgs.idx", "truncated"),
    ),
    (
        "idx-count-mismatch",
        _idx(_GOOD, np.zeros(5, np.uint8)),
        1,
        ("imgs.idx", "labs.idx", "6 images", "5 labels"),
    ),
    (
        "idx-labels-2d",
        _idx(_GOOD, np.zeros((6, 2), np.uint8)),
        1,
        ("data.labels", "labs.idx", "one integer label per image"),
    ),
    (
        "idx-images-5d",
        _idx(np.zeros((6, 2, 2, 2, 2), np.uint8), np.zeros(6, np.uint8)),
        1,
        ("data.images", "imgs.idx", "N×H×W"),
    ),
    (
        "folder-no-class-subfolders",
        _folder(lambda r: Image.new("RGB", (8, 8)).save(r / "x.png")),
        1,
        ("data.path", "other", "no class subfolders"),
    ),
    (
        "folder-no-images",
        _folder(lambda r: [(r / "a").mkdir(), (r / "a" / "x.txt").write_text("x")]),
        1,
        ("data.path", "empty"),
    ),
    (
        "folder-many-sizes",
        _folder(_many_sizes),
        2,
        ("data.transform", "different sizes", "resize and center_crop"),
    ),
    (
        "factory-ids-not-unique",
        _factory(
            f"class D:\n    sample_ids = ['a'] * 4\n    targets = [0, 1, 0, 1]\n    def __len__(self): return 4\n    def __getitem__(self, i): return {_ITEM}\ndef build(): return D()\n"
        ),
        1,
        ("data.factory", "sample_ids are not unique", "'a' (4×)"),
    ),
    (
        "factory-ids-wrong-count",
        _factory(
            f"class D:\n    sample_ids = ['a']\n    targets = [0, 1, 0, 1]\n    def __len__(self): return 4\n    def __getitem__(self, i): return {_ITEM}\ndef build(): return D()\n"
        ),
        1,
        ("data.factory", "4 samples but 1 sample_ids"),
    ),
    (
        "factory-targets-wrong-count",
        _factory(
            f"class D:\n    targets = [0, 1]\n    def __len__(self): return 4\n    def __getitem__(self, i): return {_ITEM}\ndef build(): return D()\n"
        ),
        1,
        ("data.factory", "4 samples but 2 'targets'"),
    ),
    (
        "factory-no-labels",
        _factory(f"def build(): return [{_ITEM} for _ in range(4)]\n"),
        1,
        ("data.factory", "item 0", "(image, label)"),
    ),
    (
        "factory-label-not-int",
        _factory(f"def build(): return [({_ITEM}, 'cat') for _ in range(4)]\n"),
        1,
        ("data.factory", "label 'cat'"),
    ),
    (
        "factory-negative-label",
        _factory(f"def build(): return [({_ITEM}, -1) for _ in range(4)]\n"),
        1,
        ("data.factory", "negative label -1"),
    ),
    (
        "factory-label-beyond-names",
        _factory(
            f"class D(list):\n    classes = ['a', 'b']\ndef build(): return D([({_ITEM}, i) for i in range(4)])\n"
        ),
        1,
        ("data.factory", "label 2", "2 class names"),
    ),
    (
        "factory-len-raises",
        _factory(
            "class D:\n    def __len__(self): raise IOError('db closed')\n    def __getitem__(self, i): pass\ndef build(): return D()\n"
        ),
        1,
        ("data.factory", "len(dataset)", "failed", "db closed"),
    ),
    (
        "factory-item-raises-while-labelling",
        _factory(
            "class D:\n    def __len__(self): return 3\n    def __getitem__(self, i): raise KeyError(i)\ndef build(): return D()\n"
        ),
        1,
        ("data.factory", "reading item 0", "KeyError", "'targets' attribute"),
    ),
    ("factory-empty", _factory("def build(): return []\n"), 1, ("data.factory", "empty")),
]


@pytest.mark.parametrize(
    ("setup", "code", "names"), [c[1:] for c in SETUP_CASES], ids=[c[0] for c in SETUP_CASES]
)
def test_dataset_fault_stops_at_setup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: Setup, code: int, names: tuple[str, ...]
) -> None:
    raw = base_config(tmp_path)
    setup(raw, tmp_path)
    cfg = write(tmp_path, raw)
    result = run_main(["audit", "--config", str(cfg), "-q"], capsys)
    assert_clean_failure(result, code, *names)
    assert not list((tmp_path / "runs").glob("2*"))


def test_example_factory_config_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """configs/example_factory_dataset.yaml (factory module next to the config, no PYTHONPATH) audits."""
    repo = Path(__file__).resolve().parents[2]
    raw = yaml.safe_load((repo / "configs" / "example_factory_dataset.yaml").read_text())
    raw["data"]["factory_kwargs"] = {"limit": 120}
    raw["scoring"] = {"intervention": False}
    raw["analysis"].update(min_class_size=5, k_max=3, n_neighbors=4)
    cfg = tmp_path / "example.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    (tmp_path / "digits_data.py").write_text((repo / "configs" / "digits_data.py").read_text())
    result = run_main(["audit", "--config", str(cfg), "-q", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert result.code == 0, result.output
    run = next((tmp_path / "runs").glob("2*"))
    assert len(pd.read_parquet(run / "samples.parquet")) == 120
    assert np.load(run / "thumbs.npy").shape == (120, 28, 28, 1)
