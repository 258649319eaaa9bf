"""The torchrun context of an audit: rank, world size and the few collectives the audit needs.

Outside torchrun (``WORLD_SIZE`` unset or 1) every method is a no-op, so the audit is written once for
both cases. Under torchrun every rank joins the process group (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from spray.errors import ConfigError, SprayError

#: The key of :meth:`DistContext.check_same` that holds the samples' ids and labels in dataset order.
ORDER_KEY = "sample order"


@dataclass
class DistContext:
    """Rank and world size; ``world_size == 1`` outside torchrun."""

    rank: int = 0
    world_size: int = 1
    timeout_s: float = 1800.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @contextmanager
    def meeting(self, what: str) -> Iterator[None]:
        """Turn the process group's own errors in a collective (gloo's "Timed out waiting 20000ms for send
        operation", a peer's "Connection closed") into a :class:`SprayError` that names this rank, where the
        ranks meet and the setting."""
        try:
            yield
        except RuntimeError as err:
            text = str(err)
            if "imed out" in text or "timeout" in text.lower():
                why = (
                    f"gave up waiting for the other ranks after batch.dist_timeout_s = {self.timeout_s:g} s: a rank "
                    "is far slower (one large class, a slow disk) or stuck; raise batch.dist_timeout_s, or look "
                    "at the slowest rank's log lines"
                )
            elif "closed" in text.lower() or "reset by peer" in text.lower():
                why = (
                    "lost the connection to another rank, which ended (its status file and log lines say why)"
                )
            else:
                raise
            raise SprayError(
                f"rank {self.rank} of {self.world_size} {why} (where the ranks meet: {what}; {text.splitlines()[0][:200]})"
            ) from None

    def _all_gather(self, obj: Any, what: str) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (``what``: where the ranks meet, for errors)."""
        every: list[Any] = [None] * self.world_size
        with self.meeting(what):
            dist.all_gather_object(every, obj)
        return every

    def barrier(self) -> None:
        if self.world_size > 1:
            with self.meeting("a barrier"):
                dist.barrier()

    @contextmanager
    def main_first(self, when: bool = True) -> Iterator[None]:
        """Rank 0 runs the block before the other ranks (``when``), so that they find what it cached instead of
        each computing it. The block must not raise: a rank that fails in it leaves the others waiting."""
        first = when and self.world_size > 1
        if first and not self.is_main:
            self.barrier()
        yield
        if first and self.is_main:
            self.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        with self.meeting("rank 0's broadcast"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum_counts(self, counts: list[int]) -> list[int]:
        """Element-wise sum of every rank's ``counts``."""
        if self.world_size == 1:
            return list(counts)
        every = self._all_gather(list(counts), "the count of every rank's work")
        return [int(sum(c[i] for c in every)) for i in range(len(counts))]

    def scatter_objects(self, make: Callable[[int], Any]) -> Any:
        """Rank 0 sends ``make(r)`` to each rank ``r > 0``, one rank after the other, so that it holds one
        share at a time; every rank returns its own share (rank 0 ``make(0)``).

        Parameters
        ----------
        make : callable
            ``make(rank) -> object``; called on rank 0 only.
        """
        if self.is_main:
            for r in range(1, self.world_size):
                share = make(r)  # built outside the meeting: its own errors are not the process group's
                with self.meeting("rank 0 sending each rank its share"):
                    dist.send_object_list([share], dst=r)
            return make(0)
        box: list[Any] = [None]
        with self.meeting("rank 0 sending each rank its share"):
            dist.recv_object_list(box, src=0)
        return box[0]

    def gather_to_main(self, items: list[Any]) -> list[Any]:
        """Every rank's ``items`` on rank 0 (rank 0's first, then rank 1's, ...); ``[]`` on the other ranks.

        Sent in rounds of one item per rank, so that rank 0 never holds more than one round in transit:
        the ranks may hold different numbers of items.
        """
        if self.world_size == 1:
            return list(items)
        counts = [0] * self.world_size
        counts[self.rank] = len(items)
        rounds = max(self.sum_counts(counts))
        got: list[list[Any]] = [[] for _ in range(self.world_size)]
        for i in range(rounds):
            mine = items[i] if i < len(items) else None
            box: list[Any] | None = [None] * self.world_size if self.is_main else None
            with self.meeting("rank 0 gathering the ranks' results"):
                dist.gather_object((i < len(items), mine), box, dst=0)
            if box is not None:
                for r, (present, item) in enumerate(box):
                    if present:
                        got[r].append(item)
        return [it for per_rank in got for it in per_rank]

    def check_same(self, hashes: dict[str, str], order: Callable[[], str] | None = None) -> None:
        """Raise :class:`ConfigError` on every rank when a rank's run hashes (model, data, config, code) differ
        from rank 0's, or the digest of its samples' order (``order``, computed only under torchrun) does.

        Ranks on several machines read their own copies of the files: with other data, each would explain its
        shards of another run and the merge would fail late (a missing shard manifest) or mix two datasets.
        """
        if self.world_size == 1:
            return
        mine = {**hashes, ORDER_KEY: order()} if order is not None else dict(hashes)
        every = self._all_gather(mine, "the check that every rank audits the same model, data and config")
        for rank, theirs in enumerate(every[1:], start=1):
            differ = sorted(k for k in every[0].keys() | theirs.keys() if every[0].get(k) != theirs.get(k))
            if differ:
                raise ConfigError(
                    f"rank {rank} of {self.world_size}: its {' and '.join(differ)} differ from rank 0's (the run's "
                    "hashes of them): every rank must audit the same model, data and config; on several "
                    "machines give each the same files at the same paths and the same spray version, and read an "
                    "image folder from one shared file system (it is fingerprinted by its files' sizes and "
                    "times, which a copy does not keep); data still being written while the ranks start gives "
                    "this too"
                    + (
                        "; a factory dataset must list its samples in one order in every process (sort them: a "
                        "set's or a dict's order can change with each process's hash seed)"
                        if ORDER_KEY in differ
                        else ""
                    )
                )

    def gather_errors(self, err: BaseException | None) -> None:
        """Collective check after a step that may fail on some ranks only.

        Every rank passes its own error (or None); if any rank failed, every rank raises, so no rank
        is left waiting in a later collective for a peer that has given up.
        """
        if self.world_size == 1:
            if err is not None:
                raise err
            return
        mine = None if err is None else (type(err).__name__, str(err), getattr(err, "exit_code", 1))
        msgs = self._all_gather(mine, "the check that every rank finished its step")
        if err is not None:
            raise err
        for rank, m in enumerate(msgs):
            if m is not None:
                e = SprayError(f"rank {rank} failed: {m[0]}: {m[1]}")
                e.exit_code = int(m[2])
                raise e


def dist_context(device: torch.device, timeout_s: float = 1800.0) -> DistContext:
    """Join the torchrun process group if launched under torchrun (gloo on CPU, nccl on CUDA).

    Parameters
    ----------
    device : torch.device
        The compute device (picks the backend).
    timeout_s : float
        How long a collective waits for the slowest rank before it fails (``batch.dist_timeout_s``):
        ranks meet at the end of the batch stage and at the end of the analysis.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if device.type == "cuda" and device.index is None:
        # One GPU per rank: without this every rank of a node computes on GPU 0 (and nccl refuses ranks that
        # share a GPU). torch.device("cuda") then means this rank's GPU everywhere.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s)
        )
    return DistContext(dist.get_rank(), dist.get_world_size(), timeout_s)
