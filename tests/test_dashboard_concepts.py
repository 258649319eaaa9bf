"""The cluster page of a concept finding (AppTest, on a run written by spray's run writer): its members'
concept-conditional heatmaps instead of the plain ones, and reference samples per characteristic channel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from tests.dashboard_fixtures import pointed_at
from tests.dashboard_tables import html_grid
from tests.runs.builders import make_report, write_published
from tests.test_dashboard_apptest import APP, ok, texts


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    d = tmp_path_factory.mktemp("cruns")
    report, stage = make_report(n_per_class=20)
    stage.batch.concepts = np.random.default_rng(3).random((len(stage.batch), 9)).astype(np.float32)
    write_published(d / "runs", report, stage)
    return d, report


@pytest.fixture
def env(run: tuple[Path, object], tmp_path: Path) -> Iterator[None]:
    with pointed_at(run[0] / "runs", tmp_path / "flags.sqlite"):
        yield


def _page(cluster: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["cluster"] = cluster
    return ok(at.run().switch_page("views/cluster.py").run())


def test_a_concept_finding_shows_conditional_heatmaps_and_references(
    env: None, run: tuple[Path, object]
) -> None:
    report = run[1]
    f = next(f for f in report.findings if f.space == "concept")  # type: ignore[attr-defined]
    stored = next(m for m in report.conditional_maps if m.key == f.key)  # type: ignore[attr-defined]
    at = _page(f.key)
    shown = texts(at)
    assert "concept space only" in shown and "channels 3, 7" in shown
    assert "cluster 1 of the concept-space k=2 labelling" in shown  # not taken for pixel cluster k2/c1
    assert f"The grid shows the {len(stored.sample_ids)} members with a stored concept-conditional" in shown
    assert "Concept-conditional heatmaps" in shown
    imgs = at.get("image")
    # mean heatmap, colour bar, then one strip of references per channel; the members' grid is static HTML
    assert len(imgs) == 4
    assert len(html_grid(at)) == len(stored.sample_ids) < f.size
    assert [g["sample_id"] for g in html_grid(at)] == [str(s) for s in stored.sample_ids]
    assert [len(i.proto.imgs) for i in imgs[2:]] == [8, 8]
    assert all(i.url.startswith("data:image/png;base64,") for el in imgs for i in el.proto.imgs)
    assert "Channel 3" in shown and "Channel 7" in shown
    # the plain heatmaps of every member instead
    ok(at.segmented_control(key="w_heat").set_value("plain").run())
    assert len(html_grid(at)) == f.size
    assert at.query_params["heat"] == "plain"


def test_a_pixel_finding_keeps_its_plain_page(env: None, run: tuple[Path, object]) -> None:
    report = run[1]
    f = next(f for f in report.findings if f.space == "pixel")  # type: ignore[attr-defined]
    at = _page(f.key)
    assert "Concept-conditional" not in texts(at) and "Reference samples" not in texts(at)
    assert len(at.get("image")) == 2 and html_grid(at)


def test_an_unknown_concept_key_says_which_exist(env: None) -> None:
    at = _page("1/concept/k5/c0")
    assert "concept-space labellings for k = 2" in texts(at)


def test_a_members_sample_page_links_its_concept_only_finding(env: None, run: tuple[Path, object]) -> None:
    report = run[1]
    f = next(f for f in report.findings if f.space == "concept")  # type: ignore[attr-defined]
    member = str(f.member_ids[0])
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/sample.py")
    at.query_params["sample"] = member
    ok(at.run())
    assert "Its concept-space findings" in texts(at)
    assert any(link.label.startswith(f.key) for link in at.get("page_link"))
    # A sample outside every concept-only finding of its class lists none.
    inside = {str(s) for g in report.findings if g.space == "concept" for s in g.member_ids}  # type: ignore[attr-defined]
    other = next(str(s) for g in report.findings for s in g.member_ids if str(s) not in inside)  # type: ignore[attr-defined]
    at.query_params["sample"] = other
    ok(at.run())
    assert "Its concept-space findings" not in texts(at)


def test_a_link_with_heat_plain_opens_the_plain_heatmaps(env: None, run: tuple[Path, object]) -> None:
    """A shared or reloaded link keeps the plain view (an outside-in check saw `heat` dropped from the URL)."""
    report = run[1]
    f = next(f for f in report.findings if f.space == "concept")  # type: ignore[attr-defined]
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["cluster"] = f.key
    at.query_params["heat"] = "plain"
    at = ok(at.run().switch_page("views/cluster.py").run())
    assert len(html_grid(at)) == f.size and at.query_params["heat"] == "plain"


def test_the_class_map_lists_only_findings_of_its_own_labelling(env: None, run: tuple[Path, object]) -> None:
    """A concept-only finding's cluster id numbers a concept-space labelling: the class page listed it (and
    its score in the legend and the suspicion colouring) against the map's pixel cluster of the same id."""
    report = run[1]
    f = next(f for f in report.findings if f.space == "concept")  # type: ignore[attr-defined]
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/class_view.py")
    at.query_params["cls"] = str(f.class_index)
    at.query_params["k"] = str(f.k)
    ok(at.run())
    labels = [link.label for link in at.get("page_link")]
    concept_label = f"c{f.cluster_id} · score {f.score:.3f} · n={f.size:,}"
    assert not any(label.startswith(concept_label) for label in labels), labels
    links = [link.proto.page for link in at.get("page_link")]
    assert links  # the map's own clusters are still listed
