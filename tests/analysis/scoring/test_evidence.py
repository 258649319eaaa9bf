"""Evidence sentences: one claim each; they name the class, the shares, where, and what was tested."""

from __future__ import annotations

from spray.analysis.scoring.evidence import carriers_sentence, pct
from tests.analysis.scoring.cases import NAME, Case, make_probe, patch_predictor, score


def test_evidence_names_class_and_percentages(planted: Case) -> None:
    top = score(planted)[0]
    # one decimal, as the tables of the dashboard and the report show the share
    assert top.evidence[0] == f"{top.size} of 600 {NAME} images: {100 * top.fraction:.1f} % of the class"
    assert any(e.startswith("members put") and e.endswith("region at the top left") for e in top.evidence)
    assert all(NAME in s or "%" in s or "clustering" in s for s in top.evidence)


def test_one_claim_per_line(planted: Case) -> None:
    for f in score(planted, probe=make_probe(planted, patch_predictor))[:3]:
        for line in f.evidence:
            assert "(" not in line and ";" not in line, line


def test_evidence_reports_the_paste_test(planted: Case) -> None:
    top = score(planted, probe=make_probe(planted, patch_predictor))[0]
    assert any(e.startswith("pasting it into") and e.endswith(f"into {NAME}") for e in top.evidence)
    assert any(e.startswith("sign test of the paste: p = ") for e in top.evidence)
    assert top.evidence[-2] == "flagged by the paste test"


def test_carriers_sentence_and_percentages() -> None:
    assert pct(0.123) == "12 %"
    # an outside check: a 0.3 % share read "0 % of the class", 99.87 % read "100 %"
    assert (pct(0.003), pct(0.005), pct(0.0), pct(0.9987), pct(1.0)) == (
        "under 1 %", "under 1 %", "0 %", "over 99 %", "100 %",
    )  # fmt: skip
    assert carriers_sentence(3, NAME, 100, in_place=False).startswith(
        "3 more Sandal images, 3 % of the class"
    )
    assert "in the same place" in carriers_sentence(0, NAME, 100, in_place=True)


def test_the_graph_and_auroc_sentences_state_the_measured_values(planted: Case) -> None:
    """'X % of their kNN-graph edges stay inside' is the members' own edge weight inside the group (1 −
    conductance is not, for the larger side), and the probability is the AUROC itself (2·AUROC − 1 was
    clipped at 0, so values under 50 % read as 50 %)."""
    for f in score(planted):
        s = f.signals
        assert f"{pct(s['inside_share'])} of their kNN-graph edges stay inside the group" in f.evidence
        line = next((e for e in f.evidence if "with probability" in e), None)
        if line is not None and "auroc_fixed" in s:
            assert line.endswith(f"with probability {pct(s['auroc_fixed'])}")
