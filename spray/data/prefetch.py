"""Prefetching: the next batches are read by a background thread while the current one is explained.

With ``batch.num_workers: 0`` the DataLoader reads (decodes, transforms, hashes) each batch in the main
process, in turn with the LRP pass, so one core idles while the other decodes. A thread overlaps the two:
image decoding (Pillow, zlib) and torch's kernels release the GIL for most of their time. With worker
processes the DataLoader prefetches by itself and this is not used.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds between the reader's checks whether the consumer has stopped (a full queue, a stop).
_POLL_S = 0.1
# Seconds the consumer waits for the reader thread to finish its current item after a stop.
_JOIN_S = 30.0


def prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    """The items of ``items`` in order, read up to ``depth`` ahead by a background thread.

    Parameters
    ----------
    items : iterable
        Read in the background thread only (a DataLoader without worker processes).
    depth : int
        Items read ahead; 0 reads each item when it is asked for, in the caller's thread.

    Yields
    ------
    The items. An exception raised while reading is raised here, at the item it replaced; when the
    consumer stops early (an error, a signal), the reader stops after its current item.
    """
    if depth <= 0:
        yield from items
        return
    slots: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
        except BaseException as err:  # handed to the consumer, which raises it in its own thread
            put(("error", err))
            return
        put(("done", None))

    reader = threading.Thread(target=read, name="spray-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "item":
                yield value  # type: ignore[misc]
            elif kind == "error":
                assert isinstance(value, BaseException)
                raise value
            else:
                return
    finally:
        stop.set()
        reader.join(timeout=_JOIN_S)
        if reader.is_alive():
            log.warning("the prefetching thread did not stop within %.0f s; it is left to finish", _JOIN_S)
