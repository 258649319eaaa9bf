"""Seeded orders stable under additions (donor and target picks of the paste test)."""

from __future__ import annotations

import numpy as np

from spray.analysis.scoring import rendezvous_pairs, stable_order


def test_stable_order_and_rendezvous_pairs_change_little_when_samples_are_added() -> None:
    keys = [f"h{i}" for i in range(1000)]
    more = keys + [f"new{i}" for i in range(50)]  # 5 % new
    first = [keys[i] for i in stable_order(keys, "s")[:200]]
    again = [more[i] for i in stable_order(more, "s")[:200]]
    assert len(set(first) & set(again)) >= 170  # ~5 % of the pick replaced, not all of it
    assert first != [keys[i] for i in stable_order(keys, "other salt")[:200]]  # the salt is the seed
    assert sorted(stable_order(keys, "s").tolist()) == list(range(1000))  # a permutation

    targets = [f"t{i}" for i in range(200)]
    donors = [f"d{i}" for i in range(40)]
    p1 = rendezvous_pairs(targets, donors)
    p2 = rendezvous_pairs(targets, [*donors, "d_new1", "d_new2"])
    same = np.mean([donors[a] == ([*donors, "d_new1", "d_new2"])[b] for a, b in zip(p1, p2, strict=True)])
    assert same >= 0.85
    assert len(set(p1.tolist())) >= 30  # donors are spread over the targets
