"""The torchrun context of an audit: rank, world size and the few collectives the audit needs.

Outside torchrun (``WORLD_SIZE`` unset or 1) every method is a no-op, so the audit is written once for
both cases. Under torchrun every rank joins the process group (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from spray.errors import SprayError


@dataclass
class DistContext:
    """Rank and world size; ``world_size == 1`` outside torchrun."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum_counts(self, counts: list[int]) -> list[int]:
        """Element-wise sum of every rank's ``counts``."""
        if self.world_size == 1:
            return list(counts)
        every: list[Any] = [None] * self.world_size
        dist.all_gather_object(every, list(counts))
        return [int(sum(c[i] for c in every)) for i in range(len(counts))]

    def gather_errors(self, err: BaseException | None) -> None:
        """Collective check after a step that may fail on some ranks only.

        Every rank passes its own error (or None); if any rank failed, every rank raises, so no rank
        is left waiting in a later collective for a peer that has given up.
        """
        if self.world_size == 1:
            if err is not None:
                raise err
            return
        msgs: list[Any] = [None] * self.world_size
        mine = None if err is None else (type(err).__name__, str(err), getattr(err, "exit_code", 1))
        dist.all_gather_object(msgs, mine)
        if err is not None:
            raise err
        for rank, m in enumerate(msgs):
            if m is not None:
                e = SprayError(f"rank {rank} failed: {m[0]}: {m[1]}")
                e.exit_code = int(m[2])
                raise e


def dist_context(device: torch.device) -> DistContext:
    """Join the torchrun process group if launched under torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size())
