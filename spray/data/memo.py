"""Decoded model inputs kept in memory for the rest of an audit, within a byte budget.

The batch stage decodes every new sample once; the analysis's paste tests then load the inputs of many
of them again (on 4,000 Fashion-MNIST PNGs, 9,746 loads of 1.7 s in all). Kept here, a sample is decoded
once per process; the least recently used inputs leave first when the budget is full.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class InputMemo:
    """Model inputs by dataset row, the least recently used dropped beyond ``budget_bytes``.

    Parameters
    ----------
    budget_bytes : int
        Most bytes held; 0 keeps nothing.
    """

    def __init__(self, budget_bytes: int = 0) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._bytes = 0
        #: Loads answered from memory and loads that had to decode.
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, row: int) -> torch.Tensor | None:
        """The input of ``row`` ``(C, H, W)`` on the host, or None when it is not held."""
        x = self._items.get(row)
        if x is None:
            self.misses += 1
            return None
        self._items.move_to_end(row)
        self.hits += 1
        return x

    def put(self, row: int, x: torch.Tensor) -> None:
        """Hold the host tensor ``x`` ``(C, H, W)`` as the input of ``row`` (a copy, so that a batch it
        is a view of is not kept alive)."""
        size = self._size(x)
        if size > self.budget_bytes or x.device.type != "cpu":
            return
        if row in self._items:
            self._bytes -= self._size(self._items.pop(row))
        self._items[row] = x.detach().clone()
        self._bytes += size
        while self._bytes > self.budget_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= self._size(old)

    def put_batch(self, rows: list[int], x: torch.Tensor, dataset_rows: int) -> None:
        """Hold the inputs of a batch: ``x`` ``(n, C, H, W)`` for dataset ``rows`` (length ``n``), when the
        inputs of all ``dataset_rows`` fit in the budget (otherwise the batch stage's early batches would
        be copied only to be dropped before the analysis reads any of them)."""
        if len(x) == 0 or self._size(x[0]) * dataset_rows > self.budget_bytes or x.device.type != "cpu":
            return
        for row, xi in zip(rows, x, strict=True):
            self.put(row, xi)

    @staticmethod
    def _size(x: torch.Tensor) -> int:
        return x.element_size() * x.nelement()
