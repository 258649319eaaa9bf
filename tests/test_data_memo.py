"""The in-memory inputs of an audit: a byte budget, least recently used out first, copies of batches,
and a dataset that answers from it with the values a new decode gives."""

from __future__ import annotations

from pathlib import Path

import torch

from spray.config import DataConfig
from spray.data import Sample, build_dataset
from spray.data.memo import InputMemo
from tests.helpers import make_image_folder


def test_the_budget_drops_the_least_recently_used_first() -> None:
    x = torch.zeros(1, 4, 4)  # 64 bytes
    memo = InputMemo(budget_bytes=3 * 64)
    for row in range(3):
        memo.put(row, x + row)
    assert memo.get(0) is not None  # 0 is now the most recently used
    memo.put(3, x + 3)
    assert len(memo) == 3 and memo.get(1) is None
    assert [float(memo.get(r)[0, 0, 0]) for r in (0, 2, 3)] == [0.0, 2.0, 3.0]  # type: ignore[index]
    assert memo.hits == 4 and memo.misses == 1
    # an input larger than the whole budget, and any input with no budget, is not held
    memo.put(9, torch.zeros(1, 8, 8))
    assert memo.get(9) is None and len(memo) == 3
    off = InputMemo()
    off.put_batch([0, 1], torch.zeros(2, 1, 4, 4), dataset_rows=2)
    assert len(off) == 0


def test_a_batch_is_held_as_copies() -> None:
    batch = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    memo = InputMemo(budget_bytes=1 << 20)
    memo.put_batch([7, 3], batch, dataset_rows=10)
    held = memo.get(3)
    assert held is not None and torch.equal(held, batch[1])
    batch.zero_()  # the loader's buffer is reused: what is held must not change with it
    assert float(held.sum()) > 0 and held.untyped_storage().nbytes() == 64


def test_batches_are_not_held_when_the_whole_dataset_would_not_fit() -> None:
    batch = torch.zeros(2, 1, 4, 4)  # 64 bytes per input
    memo = InputMemo(budget_bytes=10 * 64)
    memo.put_batch([0, 1], batch, dataset_rows=11)  # the early batches would be dropped before any use
    assert len(memo) == 0
    memo.put_batch([0, 1], batch, dataset_rows=10)
    assert len(memo) == 2


def test_the_dataset_answers_from_memory_with_what_a_decode_gives(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", n_per_class=3)
    ds = build_dataset(DataConfig(kind="image_folder", path=root))
    ds.input_memo = InputMemo(budget_bytes=1 << 20)
    item = ds[2]
    assert isinstance(item, Sample) and item.x is not None
    ds.input_memo.put_batch([2], item.x[None], len(ds))  # as the batch stage does with each loaded batch
    fresh = build_dataset(DataConfig(kind="image_folder", path=root))
    assert torch.equal(ds.load_input(2), fresh.load_input(2)) and ds.input_memo.hits == 1
    # a sample the batch stage did not hold is decoded once, then answered from memory
    first = ds.load_input(4)
    assert ds.input_memo.misses == 1 and torch.equal(ds.load_input(4), first) and ds.input_memo.hits == 2
