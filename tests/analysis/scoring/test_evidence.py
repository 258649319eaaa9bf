"""Evidence sentences: they name the class, the shares and where."""

from __future__ import annotations

from spray.analysis.scoring.evidence import carriers_sentence, pct
from tests.analysis.scoring.cases import NAME, Case, make_probe, patch_predictor, score


def test_evidence_names_class_and_percentages(planted: Case) -> None:
    top = score(planted)[0]
    assert top.evidence[0].startswith(f"{round(100 * top.fraction)} % of class {NAME}")
    assert "region at the top left" in top.evidence[1]
    assert all(NAME in s or "%" in s for s in top.evidence)


def test_evidence_reports_the_paste_test(planted: Case) -> None:
    top = score(planted, probe=make_probe(planted, patch_predictor))[0]
    paste = [e for e in top.evidence if e.startswith("pasting that region flips")]
    assert len(paste) == 1 and f"to {NAME}" in paste[0] and "p = " in paste[0]


def test_carriers_sentence_and_percentages() -> None:
    assert pct(0.123) == "12 %"
    assert carriers_sentence(3, NAME, 100, frame=False).startswith("3 more Sandal images (3 % of the class)")
    assert "in the same place" in carriers_sentence(0, NAME, 100, frame=True)
