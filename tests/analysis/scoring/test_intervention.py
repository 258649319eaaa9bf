"""The paste test against its same-class null, on a toy shortcut model."""

from __future__ import annotations

import re

import numpy as np
import torch
from scipy.stats import binomtest

from spray.analysis.scoring import InterventionProbe
from spray.analysis.scoring.intervention import rank_sum_p, sign_test_p
from tests.analysis.scoring.cases import (
    CLASS,
    Case,
    blind_predictor,
    images,
    make_probe,
    patch_predictor,
    score,
)


def test_sign_test_matches_scipy() -> None:
    for b, c in [(0, 0), (5, 0), (7, 3), (3, 7), (30, 12)]:
        want = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5, alternative="greater").pvalue
        assert abs(sign_test_p(b, c) - want) < 1e-12


def test_intervention_flips_with_shortcut_model(planted: Case) -> None:
    findings = score(planted, probe=make_probe(planted, patch_predictor))
    top = findings[0]
    assert top.signals["tested"] == 1.0
    assert top.signals["flip_rate"] > 0.9
    assert top.signals["flip_null"] < 0.05  # the same region from non-member Sandals does not flip
    assert top.suspicious
    # Only the planted cluster flips; the other tested clusters' pastes are dark.
    assert [f.suspicious for f in findings].count(True) == 1


def test_intervention_ignored_patch_raises_no_alarm(planted: Case) -> None:
    findings = score(planted, probe=make_probe(planted, blind_predictor))
    assert findings[0].signals["flip_rate"] == 0.0
    assert not any(f.suspicious for f in findings)


def test_null_arm_is_skipped_when_the_members_flip_rate_is_below_the_margin(planted: Case) -> None:
    """A cluster whose pasted region flips (almost) nothing cannot be flagged: its null arm never runs."""
    calls: list[int] = []

    def never(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return torch.zeros(len(x), dtype=torch.long)  # class 0: never the tested class (CLASS = 3)

    found = score(planted, make_probe(planted, never))
    tested = [f for f in found if f.signals.get("tested")]
    assert tested and all(f.signals.get("flip_null_skipped") == 1.0 for f in tested)
    assert all("flip_null" not in f.signals and not f.suspicious for f in tested)
    assert any("null was not run" in " ".join(f.evidence) for f in tested)
    # One batch for the targets as they are, then one member arm per tested cluster, and no null arms.
    assert len(calls) == 1 + len(tested)


def test_paste_test_is_skipped_when_the_members_pixels_vary(natural: Case) -> None:
    """Natural sub-groups whose pixels in the region vary like the class cannot be flagged: no forward
    pass runs for them (not even the targets' own predictions), and the evidence says why."""
    calls: list[int] = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return torch.zeros(len(x), dtype=torch.long)

    # The toy inputs are noise everywhere (no bright patch): every cluster's pixels vary like the class.
    imgs = images(natural, bright_members=False)
    probe = InterventionProbe(
        predict=counting,
        load_inputs=lambda ids: torch.stack([imgs[i] for i in ids]),
        other_ids=natural.ids[:50],
        other_labels=np.full(50, CLASS + 1),
    )
    found = score(natural, probe=probe)
    looked = [f for f in found if "appearance" in f.signals]
    assert looked, "the leading candidates get the appearance signal"
    assert all(f.signals["paste_skipped"] == 1.0 and f.signals["appearance"] < 0.4 for f in looked)
    assert all(f.signals["tested"] == 0.0 and "flip_rate" not in f.signals for f in found)
    assert calls == []
    assert any("no intervention was run" in " ".join(f.evidence) for f in looked)
    assert not any(f.suspicious for f in found)


def test_rank_sum_p_matches_scipy() -> None:
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    for shift in (0.0, 0.3, 1.0):
        a, b = rng.normal(shift, 1, 40).round(1), rng.normal(0, 1, 60).round(1)  # with ties
        want = mannwhitneyu(a, b, alternative="greater", method="asymptotic").pvalue
        assert abs(rank_sum_p(a, b) - want) < 1e-9


def _logit_probe(case: Case, uses_patch: bool) -> InterventionProbe:
    """The toy probe with logits: class CLASS's logit is 5 × the top-left patch's brightness (a model
    that leans on the patch) or 0 (a model that ignores it)."""
    probe = make_probe(case, patch_predictor if uses_patch else blind_predictor)

    def logits(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 8)
        if uses_patch:
            out[:, CLASS] = 5.0 * x[:, 0, 1:5, 1:5].mean(dim=(1, 2))
        return out

    probe.logits = logits
    return probe


def test_removal_lowers_the_members_logit_only_when_the_model_uses_the_patch(planted: Case) -> None:
    top = score(planted, probe=_logit_probe(planted, uses_patch=True))[0]
    assert top.signals["removal_drop"] > 2.0 and abs(top.signals["removal_null"]) < 0.1
    assert top.signals["removal_p"] < 1e-6 and top.signals["removal_auroc"] > 0.95
    # an outside check: "lowers the members' logit by 5.42" was the mean of the 64 members tested, not of all
    tested = re.compile(r"removing it lowers the \S+ logit of the (\d+) members tested by")
    said = [m for e in top.evidence if (m := tested.match(e))]
    assert top.suspicious and said and 0 < int(said[0].group(1)) <= top.size
    blind = score(planted, probe=_logit_probe(planted, uses_patch=False))[0]
    assert blind.signals["removal_drop"] == 0.0 and not blind.suspicious


def test_removal_alone_can_flag_what_pasting_cannot(planted: Case) -> None:
    """A model whose patch detector needs the rest of a class image (a marker every image of the
    class has, a bright bottom row): pasting into other-class images changes nothing, removing the patch from the members
    still lowers their logit."""
    probe = _logit_probe(planted, uses_patch=True)
    load = probe.load_inputs

    def marked(ids: list[str]) -> torch.Tensor:
        x = load(ids).clone()
        x[[i for i, sid in enumerate(ids) if sid.startswith("s")], 0, -1, :] = 1.0
        return x

    def logits(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 8)
        context = (x[:, 0, -1, :].mean(dim=1) > 0.9).float()  # the whole bottom row: a class marker
        out[:, CLASS] = 5.0 * x[:, 0, 1:5, 1:5].mean(dim=(1, 2)) * context
        return out

    probe.load_inputs, probe.logits = marked, logits
    top = score(planted, probe=probe)[0]
    assert top.signals["flip_rate"] == 0.0 and abs(top.signals["paste_gain"]) < 1e-6
    assert top.suspicious and top.signals["removal_drop"] > 2.0
    assert top.evidence[-2] == "flagged by the removal test"
