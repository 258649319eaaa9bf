"""The torchrun context: the process group's own errors in a collective, said in spray's words."""

from __future__ import annotations

import pytest

from spray.distributed import DistContext
from spray.errors import SprayError


def test_the_process_groups_own_errors_name_the_rank_the_meeting_and_the_setting() -> None:
    """An outside check: a rank stuck reading one sample made rank 0 fail after batch.dist_timeout_s with
    gloo's "[...unbound_buffer.cc:129] Timed out waiting 20000ms for send operation to complete" and a
    traceback, naming neither the setting nor where the ranks meet."""
    ctx = DistContext(rank=0, world_size=2, timeout_s=20)
    gloo = "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting 20000ms for send"
    timed_out = r"rank 0 of 2 gave up .* batch.dist_timeout_s = 20 s.*a barrier"
    with pytest.raises(SprayError, match=timed_out), ctx.meeting("a barrier"):
        raise RuntimeError(gloo)
    with pytest.raises(SprayError, match="lost the connection to another rank"), ctx.meeting("a barrier"):
        raise RuntimeError("Connection closed by peer [127.0.0.1]:1234")
    # not the process group's: left as it is
    with pytest.raises(RuntimeError, match="something else"), ctx.meeting("a barrier"):
        raise RuntimeError("something else")
