"""The paste probe: cached predictions, targets loaded once."""

from __future__ import annotations

import numpy as np
import torch

from spray.analysis.scoring import InterventionProbe


class DictCache:
    def __init__(self) -> None:
        self.d: dict[str, int] = {}

    def get_many(self, keys):
        return {k: self.d[k] for k in keys if k in self.d}

    def put_many(self, items) -> None:
        self.d.update(items)


def test_predict_pasted_reuses_cached_predictions() -> None:
    images = {f"s{i}": torch.full((1, 8, 8), float(i)) for i in range(10)}
    calls: list[int] = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return (x.flatten(1).sum(1) > 40).long()  # depends on the pasted pixels

    probe = InterventionProbe(
        predict=predict,
        load_inputs=lambda ids: torch.stack([images[i] for i in ids]),
        other_ids=[],
        other_labels=np.zeros(0),
        content_keys={k: f"hash-{k}" for k in images},
        cache=DictCache(),
    )
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[:, :2, :2] = True
    targets, donors = ["s0", "s1", "s2"], ["s9", "s9", "s3"]
    a = probe.predict_pasted(targets, donors, masks)
    # s0 with s9's top-left quarter: 16 pixels of 9 -> 144 > 40; s2 with s3's: 16*3 + 48*2 = 144 > 40.
    np.testing.assert_array_equal(a, [1, 1, 1])
    assert calls == [3]
    b = probe.predict_pasted([*targets, "s4"], [*donors, "s0"], np.concatenate([masks, masks[:1]]))
    assert calls == [3, 1] and b[:3].tolist() == a.tolist()  # only the new pair ran through the model
    # A different mask is a different image: not served from the cache.
    probe.predict_pasted(["s0"], ["s9"], ~masks[:1])
    assert calls == [3, 1, 1]


def test_predict_pasted_loads_each_target_once() -> None:
    images = {f"s{i}": torch.full((1, 4, 4), float(i)) for i in range(6)}
    loaded: list[str] = []

    def load(ids: list[str]) -> torch.Tensor:
        loaded.extend(ids)
        return torch.stack([images[i] for i in ids])

    probe = InterventionProbe(
        predict=lambda x: torch.zeros(len(x), dtype=torch.long),
        load_inputs=load,
        other_ids=[],
        other_labels=np.zeros(0),
    )
    masks = np.ones((2, 2, 2), dtype=bool)
    probe.predict_pasted(["s0", "s1"], None, None)
    probe.predict_pasted(["s0", "s1"], ["s4", "s5"], masks)
    probe.predict_pasted(["s0", "s1"], ["s5", "s4"], masks)
    assert sorted(x for x in loaded if x in ("s0", "s1")) == ["s0", "s1"]  # targets: once each


def test_paste_flips_pastes_donor_pixels_inside_the_upsampled_mask() -> None:
    images = {"t0": torch.zeros(1, 8, 8), "t1": torch.zeros(1, 8, 8), "d0": torch.ones(1, 8, 8)}
    seen: list[torch.Tensor] = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return (x[:, 0, :2, :2].mean(dim=(1, 2)) > 0.5).long() * 7

    probe = InterventionProbe(predict, lambda ids: torch.stack([images[i] for i in ids]), [], np.zeros(0))
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0, 0] = True  # one grid cell = a 2×2 pixel block
    flips = probe.paste_flips(7, ["d0"], mask, ["t0", "t1"], torch.stack([images["d0"]]))
    assert flips.tolist() == [True, True]
    assert seen[0][:, 0, :2, :2].eq(1).all() and seen[0].sum() == 2 * 4


def test_memo_logits_runs_each_new_image_once() -> None:
    images = {f"s{i}": torch.full((1, 4, 4), float(i)) for i in range(5)}
    runs: list[int] = []

    def logits(x: torch.Tensor) -> torch.Tensor:
        runs.append(len(x))
        return torch.stack([x.flatten(1).mean(1), -x.flatten(1).mean(1)], dim=1)

    probe = InterventionProbe(
        predict=lambda x: logits(x).argmax(1),
        load_inputs=lambda ids: torch.stack([images[i] for i in ids]),
        other_ids=[],
        other_labels=np.zeros(0),
        logits=logits,
    )
    built: list[list[int]] = []

    def make(ids: list[str]):
        def build(positions: list[int]) -> torch.Tensor:
            built.append(positions)
            return probe.load_inputs([ids[j] for j in positions])

        return build

    first = ["s1", "s2", "s1"]
    z = probe.memo_logits(first, make(first))
    assert z[:, 0].tolist() == [1.0, 2.0, 1.0] and built == [[0, 1]] and runs == [2]
    again = ["s3", "s2", "s1"]
    z = probe.memo_logits(again, make(again))
    assert z[:, 0].tolist() == [3.0, 2.0, 1.0] and built[-1] == [0] and runs == [2, 1]
    probe.memo_logits(["s2"], make(["s2"]))
    assert runs == [2, 1]  # nothing new: no forward pass
