from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spray.config import DataConfig, TransformConfig
from spray.data import Sample, Transform, build_dataset, collate_samples, read_idx, write_idx
from spray.errors import ConfigError, DataError
from tests.helpers import make_image_folder


def _hash(ds, i: int) -> str:
    item = ds[i]
    assert isinstance(item, Sample)
    return item.content_hash


def test_idx_roundtrip_and_ids(tmp_path: Path) -> None:
    imgs = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    write_idx(tmp_path / "i.gz", imgs)
    write_idx(tmp_path / "l.gz", np.array([0, 1, 2, 1, 0], dtype=np.uint8))
    assert np.array_equal(read_idx(tmp_path / "i.gz"), imgs)
    ds = build_dataset(DataConfig(kind="idx", images=tmp_path / "i.gz", labels=tmp_path / "l.gz"))
    assert ds.sample_ids == ["0", "1", "2", "3", "4"]
    it = ds[3]
    assert isinstance(it, Sample) and it.label == 1 and it.x is not None and it.x.shape == (1, 4, 4)
    assert torch.allclose(it.x[0], torch.from_numpy(imgs[3]).float() / 255)


def test_idx_rejects_garbage_and_truncation(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "i", np.zeros((3, 4, 4), np.uint8))
    raw = (tmp_path / "i").read_bytes()
    (tmp_path / "t").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "t")


def test_image_folder_skips_non_images_and_corrupt(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", n_per_class=3)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = build_dataset(DataConfig(kind="image_folder", path=root))
    assert ds.class_names == ["cat", "dog"]
    assert "cat/000.png" in ds.sample_ids and "cat/notes.txt" not in ds.sample_ids
    assert [s.sample_id for s in ds.pre_skipped] == ["cat/notes.txt"]
    items = [ds[i] for i in range(len(ds))]
    batch = collate_samples(items)
    assert [s.sample_id for s in batch.skipped] == ["dog/broken.png"]
    assert "corrupt or not an image" in batch.skipped[0].reason and "BytesIO" not in batch.skipped[0].reason
    assert batch.x is not None and batch.x.shape == (6, 3, 16, 16)


def test_load_input_matches_item_and_names_a_broken_sample(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", n_per_class=2)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = build_dataset(DataConfig(kind="image_folder", path=root))
    good = ds.sample_ids.index("cat/000.png")
    item = ds[good]
    assert isinstance(item, Sample) and item.x is not None
    assert torch.equal(ds.load_input(good), item.x)
    with pytest.raises(DataError, match=r"dog/broken\.png"):
        ds.load_input(ds.sample_ids.index("dog/broken.png"))


def test_content_hash_stable_and_sensitive(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", n_per_class=2)
    ds = build_dataset(DataConfig(kind="image_folder", path=root))
    h1 = _hash(ds, 0)
    assert _hash(build_dataset(DataConfig(kind="image_folder", path=root)), 0) == h1
    other = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(other).save(root / "cat" / "000.png")
    assert _hash(ds, 0) != h1


def test_transform_resize_crop_rgb_normalise() -> None:
    t = Transform(
        TransformConfig(resize=20, center_crop=16, grayscale_to_rgb=True, mean=[0.5] * 3, std=[0.5] * 3), 8
    )
    x, thumb = t(torch.full((1, 10, 12), 1.0))
    assert (
        x.shape == (3, 16, 16) and thumb is not None and thumb.shape == (8, 8, 3) and thumb.dtype == np.uint8
    )
    assert torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5
    assert t.input_bounds() == (-1.0, 1.0)


def test_an_odd_size_is_skipped_and_many_sizes_fail_early(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "a", n_per_class=3, classes=("x",), size=16)
    make_image_folder(tmp_path / "b", n_per_class=3, classes=("x",), size=20)
    (root / "x" / "big.png").write_bytes((tmp_path / "b" / "x" / "000.png").read_bytes())
    ds = build_dataset(DataConfig(kind="image_folder", path=root))
    batch = collate_samples([ds[i] for i in range(len(ds))])
    assert batch.x is not None and batch.x.shape == (3, 3, 16, 16)
    assert [s.sample_id for s in batch.skipped] == ["x/big.png"]
    assert "20×20" in batch.skipped[0].reason and "resize and center_crop" in batch.skipped[0].reason
    for size in (17, 18, 19):
        make_image_folder(tmp_path / f"s{size}", n_per_class=1, classes=("x",), size=size)
        (root / "x" / f"odd{size}.png").write_bytes((tmp_path / f"s{size}" / "x" / "000.png").read_bytes())
    with pytest.raises(ConfigError, match=r"different sizes .*resize and center_crop"):
        build_dataset(DataConfig(kind="image_folder", path=root))
    fixed = DataConfig(kind="image_folder", path=root, transform=TransformConfig(resize=16, center_crop=16))
    assert collate_samples([build_dataset(fixed)[i] for i in range(7)]).x.shape == (7, 3, 16, 16)


def test_known_hashes_skip_the_decode_but_not_the_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sample whose bytes the cache already explained is hashed, not decoded; a changed or corrupt
    one is still read in full (and a corrupt one still reported)."""
    root = make_image_folder(tmp_path / "imgs", n_per_class=2)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = build_dataset(DataConfig(kind="image_folder", path=root))
    full = [ds[i] for i in range(len(ds))]
    known = {it.content_hash for it in full if isinstance(it, Sample) and it.sample_id != "dog/001.png"}
    ds.known_hashes = frozenset(known)
    decoded: list[int] = []
    read = ds._read
    monkeypatch.setattr(ds, "_read", lambda i, **kw: decoded.append(i) or read(i, **kw))
    items = [ds[i] for i in range(len(ds))]
    assert sorted(ds.sample_ids[i] for i in decoded) == ["dog/001.png", "dog/broken.png"]
    hashes = [getattr(it, "content_hash", None) for it in items]
    assert hashes == [getattr(it, "content_hash", None) for it in full]  # same hashes either way
    batch = collate_samples(items)
    assert [batch.sample_ids[j] for j in batch.decoded] == ["dog/001.png"]
    assert batch.x is not None and batch.x.shape == (1, 3, 16, 16)
    assert batch.thumbnails is not None and batch.thumbnails.shape[0] == 1
    assert [s.sample_id for s in batch.skipped] == ["dog/broken.png"]


def test_one_mean_value_applies_to_every_channel_as_torchvision_does(tmp_path: Path) -> None:
    """An outside check: ``mean: [0.5], std: [0.5]`` (torchvision's broadcast idiom) on RGB images for a
    3-channel model was read as "the model is grey": every image was refused, and both fixes the message
    offered failed too."""
    import torchvision.transforms.functional as TF

    from tests.model_factories import tiny

    root = make_image_folder(tmp_path / "imgs", n_per_class=3, size=12)
    t = TransformConfig(mean=[0.5], std=[0.5])
    ds = build_dataset(DataConfig(kind="image_folder", path=root, transform=t))
    ds.match_model(tiny(num_classes=2, in_channels=3))
    item = ds[0]
    assert isinstance(item, Sample) and item.x is not None
    img = TF.to_tensor(Image.open(root / "cat" / "000.png"))
    torch.testing.assert_close(item.x, TF.normalize(img, [0.5], [0.5]))
    assert TransformConfig(mean=[0.5], std=[0.5], channels=3).channels == 3  # not refused
    # a model without a convolution keeps what one value said before: a grey model (grey images saved as RGB)
    grey = tmp_path / "grey" / "a"
    grey.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(grey / f"{i}.png")
    ds = build_dataset(DataConfig(kind="image_folder", path=grey.parent, transform=t))
    ds.match_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 2)))
    item = ds[1]
    assert isinstance(item, Sample) and item.x is not None and item.x.shape == (1, 12, 12)
