"""A class whose top finding is a hot-spot group (k = 0, whose labelling marks the samples in no group -1):
an outside-in check saw the class page fail (a negative count) and the sample page offer the rest of the
class as "cluster c-1" to flag."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from spray.analysis.scoring.candidates import HOTSPOT_K
from tests.dashboard_fixtures import pointed_at
from tests.runs.builders import make_report, write_published
from tests.test_dashboard_apptest import APP, ok, texts


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    d = tmp_path_factory.mktemp("hruns")
    report, stage = make_report(n_per_class=20)
    ca = next(c for c in report.classes if c.class_index == 0)
    spots = np.full(len(ca.sample_ids), -1, dtype=np.int32)
    spots[:4] = 0
    ca.clustering.labellings[HOTSPOT_K] = spots
    top = max(ca.clusters, key=lambda f: f.score)
    spot = type(top)(
        class_index=0, class_name=ca.class_name, cluster_id=0, k=HOTSPOT_K, size=4, fraction=4 / len(spots),
        score=top.score + 1.0, suspicious=False, evidence=["found as a hot spot"], signals={"size": 4.0},
        member_ids=list(ca.sample_ids[:4]), mean_heatmap=top.mean_heatmap,
    )  # fmt: skip
    ca.clusters.insert(0, spot)
    report.findings.insert(0, spot)
    write_published(d / "runs", report, stage)
    return d, (report, ca)


@pytest.fixture
def env(run: tuple[Path, object], tmp_path: Path) -> Iterator[None]:
    with pointed_at(run[0] / "runs", tmp_path / "flags.sqlite"):
        yield


def _at(page: str, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(page)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_the_class_page_opens_at_the_hot_spot_labelling(env: None) -> None:
    at = ok(_at("views/class_view.py", cls="0"))
    assert not at.exception
    shown = texts(at)
    assert "Clusters at k=0" in shown and "c0 · score" in " ".join(link.label for link in at.get("page_link"))
    assert "c-1" not in " ".join(link.label for link in at.get("page_link"))


def test_no_page_offers_the_rest_of_the_class_as_a_cluster(env: None, run: tuple[Path, object]) -> None:
    _, ca = run[1]  # type: ignore[misc]
    outside = str(ca.sample_ids[10])
    at = ok(_at("views/sample.py", sample=outside))
    assert not any("/k0/c-1" in link.label for link in at.get("page_link"))
    inside = ok(_at("views/sample.py", sample=str(ca.sample_ids[0])))
    assert any(link.label.startswith("0/k0/c0") for link in inside.get("page_link"))
    refused = _at("views/cluster.py", cluster="0/k0/c-1")
    assert "not a cluster key" in texts(refused) and "Flag" not in " ".join(
        b.label for b in refused.get("button")
    )


def test_the_spectrum_and_the_headers_name_the_hot_spot_group(env: None) -> None:
    at = ok(_at("views/class_view.py", cls="0"))
    assert "top finding is a hot-spot group (k=0" in texts(at)
    cl = ok(_at("views/cluster.py", cluster="0/k0/c0"))
    assert "hot-spot group 0" in texts(cl)
