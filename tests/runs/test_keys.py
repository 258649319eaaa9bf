"""spray.runs.keys: what a user may type for a finding, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from spray.errors import ConfigError
from spray.runs.keys import finding_key
from spray.runs.summary import FindingSummary


def _finding(key: str, class_index: int, class_name: str, k: int, cid: int, space: str) -> FindingSummary:
    return FindingSummary(
        key=key, rank=0, class_index=class_index, class_name=class_name, k=k, cluster_id=cid, size=10,
        fraction=0.1, score=0.5, suspicious=True, evidence=[], signals={}, carrier_ids=[], space=space,
    )  # fmt: skip


FINDINGS = [
    _finding("6/k6/c4", 6, "Shirt", 6, 4, "both"),
    _finding("8/concept/k6/c2", 8, "Bag", 6, 2, "concept"),
    _finding("2/k3/c1", 2, "Pullover", 3, 1, "pixel"),
]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("6/k6/c4", "6/k6/c4"),  # the key
        ("Shirt/k6/c4+C", "6/k6/c4"),  # the report's class and cluster columns
        ("k6/c4+C", "6/k6/c4"),  # the cluster column alone, unique
        ("Shirt/k6/c4", "6/k6/c4"),  # as named before concept space marked it found there too
        ("k6/c4", "6/k6/c4"),
        ("Bag/C:k6/c2", "8/concept/k6/c2"),
        ("8/C:k6/c2", "8/concept/k6/c2"),  # the class index instead of its name
        ("C:k6/c2", "8/concept/k6/c2"),
        ("8/concept/k6/c2", "8/concept/k6/c2"),
        ("Pullover/k3/c1", "2/k3/c1"),
        ("pullover/K3/C1", "2/k3/c1"),  # case does not matter
        ("bag/c:k6/c2", "8/concept/k6/c2"),
    ],
)
def test_the_names_a_user_sees_select_the_finding(text: str, key: str) -> None:
    assert finding_key(FINDINGS, text, Path("run"), "--finding") == key


def test_an_unknown_name_lists_the_findings() -> None:
    with pytest.raises(ConfigError, match=r"No finding 'Shirt/k6/c9'.*6/k6/c4 \(Shirt k6/c4\+C\)"):
        finding_key(FINDINGS, "Shirt/k6/c9", Path("run"), "--finding")
    # k6/c2 is Bag's concept-only group, whose name carries C: (no pixel cluster k6/c2 was found).
    with pytest.raises(ConfigError, match="No finding 'k6/c2'"):
        finding_key(FINDINGS, "k6/c2", Path("run"), "--finding")


def test_a_class_that_was_not_analysed_is_said_and_an_empty_run_too() -> None:
    """An outside check: ``--finding T-shirt/k2/c0`` of a class too small to analyse listed other classes'
    findings without a word about T-shirt, and a run with no finding read "the top findings are ."."""
    from spray.records import ClassSkipped

    skipped = [ClassSkipped(0, "T-shirt", 1, "fewer than analysis.min_class_size (20) samples")]
    with pytest.raises(
        ConfigError, match=r"class 'T-shirt' was not analysed in this run \(1 sample: fewer than"
    ):
        finding_key(FINDINGS, "T-shirt/k2/c0", Path("run"), "--finding", skipped)
    with pytest.raises(ConfigError, match=r"class 'T-shirt' was not analysed"):
        finding_key(FINDINGS, "0/k2/c0", Path("run"), "--finding", skipped)
    with pytest.raises(ConfigError, match=r"No finding 'class00/k2/c0' in run: the run has no finding\.$"):
        finding_key([], "class00/k2/c0", Path("run"), "--finding", skipped)


def test_a_name_several_findings_answer_to() -> None:
    """Classes "Cat" and "cat": the exact spelling wins; class folders named by digits that are not their
    index ("2" at index 1): the message suggests the keys, not a doubled class prefix."""
    cats = [_finding("0/k2/c0", 0, "Cat", 2, 0, "pixel"), _finding("1/k2/c0", 1, "cat", 2, 0, "pixel")]
    assert finding_key(cats, "cat/k2/c0", Path("run"), "--finding") == "1/k2/c0"
    assert finding_key(cats, "Cat/k2/c0", Path("run"), "--finding") == "0/k2/c0"
    with pytest.raises(ConfigError, match=r"go by 'CAT/k2/c0'.*e\.g\. --finding key:0/k2/c0\."):
        finding_key(cats, "CAT/k2/c0", Path("run"), "--finding")
    digits = [_finding("1/k3/c1", 1, "2", 3, 1, "both"), _finding("2/k3/c1", 2, "3", 3, 1, "both")]
    with pytest.raises(ConfigError, match=r"e\.g\. --finding key:1/k3/c1\."):
        finding_key(digits, "2/k3/c1+C", Path("run"), "--finding")
    with pytest.raises(ConfigError, match=r"e\.g\. --finding 2/k3/c1\b"):
        finding_key(digits, "k3/c1", Path("run"), "--finding")


def test_a_key_that_is_also_a_numbered_class_name_is_refused_not_guessed() -> None:
    """Class folders "2" (index 1) and "3" (index 2): "2/k3/c1" is the key of class "3"'s cluster and the
    class and cluster columns of class "2"'s; a user reading the table means the second, a script the
    first. Neither is guessed; ``key:`` selects by key alone."""
    digits = [_finding("1/k3/c1", 1, "2", 3, 1, "both"), _finding("2/k3/c1", 2, "3", 3, 1, "both")]
    with pytest.raises(
        ConfigError, match=r"names two findings.*key:2/k3/c1 for the first.*key:1/k3/c1 for the other"
    ):
        finding_key(digits, "2/k3/c1", Path("run"), "--finding")
    assert finding_key(digits, "key:2/k3/c1", Path("run"), "--finding") == "2/k3/c1"
    assert finding_key(digits, " key:1/k3/c1", Path("run"), "--finding") == "1/k3/c1"
    assert finding_key(digits, "3/k3/c1", Path("run"), "--finding") == "2/k3/c1"  # class "3" by name only
    assert finding_key(FINDINGS, "6/k6/c4", Path("run"), "--finding") == "6/k6/c4"  # no class named "6"
    with pytest.raises(ConfigError, match=r"No finding has the key '9/k3/c1'"):
        finding_key(digits, "key:9/k3/c1", Path("run"), "--finding")


def test_a_class_whose_name_begins_with_a_space_is_found_as_typed(tmp_path: Path) -> None:
    """A review: " cat/k2/c0" typed exactly picked class "cat" over class " cat" (the text was trimmed)."""
    from types import SimpleNamespace as F

    def finding(index: int, name: str) -> F:
        return F(key=f"{index}/k2/c0", class_name=name, class_index=index, k=2, cluster_id=0, space="pixel")

    both = [finding(0, "cat"), finding(1, " cat")]
    assert finding_key(both, " cat/k2/c0", tmp_path, "--finding") == "1/k2/c0"  # type: ignore[arg-type]
    assert finding_key(both, "cat/k2/c0", tmp_path, "--finding") == "0/k2/c0"  # type: ignore[arg-type]
