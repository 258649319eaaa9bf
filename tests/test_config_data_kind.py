"""A field of another data.kind is refused instead of ignored (a config half-switched from one kind to
another audited what the kind named, not what the field said)."""

from pathlib import Path

import pytest

from spray.config import config_from_dict
from spray.errors import ConfigError


def _raw(tmp_path: Path, data: dict) -> dict:
    (tmp_path / "imgs").mkdir(exist_ok=True)
    for name in ("i.idx", "l.idx"):
        (tmp_path / name).write_bytes(b"")
    return {"model": {"architecture": "resnet18", "num_classes": 3}, "data": data}


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (
            {"kind": "image_folder", "path": "imgs", "images": "i.idx"},
            r"data\.images is for kind idx.*'image_folder'",
        ),
        (
            {"kind": "factory", "factory": "spray.lab.cnn:small_cnn", "path": "imgs"},
            r"data\.path is for kind image_folder",
        ),
        (
            {"kind": "idx", "images": "i.idx", "labels": "l.idx", "factory_kwargs": {"n": 1}},
            r"data\.factory_kwargs is for kind factory",
        ),
        (
            {"kind": "image_folder", "path": "imgs", "factory": "x.y:z"},
            r"remove data\.factory, or set data\.kind: factory",
        ),
    ],
)
def test_another_kinds_field_is_refused(tmp_path: Path, data: dict, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        config_from_dict(_raw(tmp_path, data), base_dir=tmp_path)


def test_a_kinds_own_fields_load(tmp_path: Path) -> None:
    raw = _raw(tmp_path, {"kind": "idx", "images": "i.idx", "labels": "l.idx"})
    assert config_from_dict(raw, base_dir=tmp_path).data.images == tmp_path.resolve() / "i.idx"
