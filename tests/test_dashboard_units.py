"""The dashboard's pure helpers: selections in URLs, lasso geometry, text that must stay text."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("streamlit")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dashboard"))
import embedmap
import safetext
import selection
import urlstate


@given(st.sets(st.integers(0, 10**7), max_size=300))
@settings(max_examples=60, deadline=None)
def test_integer_ids_round_trip_through_a_url(ids: set[int]) -> None:
    text = urlstate.encode_ids([str(i) for i in ids])
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)
    assert sorted(urlstate.decode_ids(text), key=int) == sorted(map(str, ids), key=int)


@given(st.sets(st.text(min_size=1, max_size=30), max_size=50))
@settings(max_examples=60, deadline=None)
def test_any_ids_round_trip_through_a_url(ids: set[str]) -> None:
    text = urlstate.encode_ids(sorted(ids))
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)
    assert sorted(urlstate.decode_ids(text)) == sorted(ids)


def test_ids_with_leading_zeros_are_not_turned_into_numbers() -> None:
    assert sorted(urlstate.decode_ids(urlstate.encode_ids(["007", "7", "0"]))) == ["0", "007", "7"]


def test_a_scattered_selection_of_150_ids_makes_a_short_url() -> None:
    ids = [str(i) for i in np.random.default_rng(0).choice(10_000, 150, replace=False)]
    assert len(urlstate.encode_ids(ids)) < 500


@pytest.mark.parametrize("bad", ["", "x123", "i!!!", "iAAAA", "s" + "A" * 10])
def test_a_damaged_selection_in_a_link_is_an_error_not_a_wrong_selection(bad: str) -> None:
    with pytest.raises(ValueError):
        urlstate.decode_ids(bad)


def test_points_in_a_lasso_match_a_brute_force_oracle() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(-1, 1, (4000, 2))
    angle = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    radius = 0.5 + 0.3 * np.sin(5 * angle)  # a star: concave
    px, py = radius * np.cos(angle), radius * np.sin(angle)
    got = selection.in_polygon(xy, px, py)
    # Oracle: the angle of each point against the star's radius at that angle (a star-shaped polygon).
    a = np.mod(np.arctan2(xy[:, 1], xy[:, 0]), 2 * np.pi)
    i = np.floor(a / (2 * np.pi / 40)).astype(int) % 40
    j = (i + 1) % 40
    p1, p2 = np.stack([px[i], py[i]], 1), np.stack([px[j], py[j]], 1)
    cross = (p2[:, 0] - p1[:, 0]) * (xy[:, 1] - p1[:, 1]) - (p2[:, 1] - p1[:, 1]) * (xy[:, 0] - p1[:, 0])
    assert np.array_equal(got, cross > 0)
    assert 0.2 < got.mean() < 0.6


def test_boxes_and_lassos_of_an_event_select_every_point_inside() -> None:
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [5.0, 5.0], [10.0, 0.0]])
    event = {
        "selection": {
            "points": [{"curve_number": 0, "point_index": 4}],
            "box": [{"x": [1.5, -0.5], "y": [-0.5, 1.5]}],
            "lasso": [{"x": [4, 6, 6, 4], "y": [4, 4, 6, 6]}],
        }
    }
    assert list(selection.geometry_positions(event, xy)) == [0, 1, 3]
    assert selection.event_positions(event, [np.arange(5)], xy) == [0, 1, 3, 4]
    assert selection.event_positions(None, [np.arange(5)], xy) == []


def test_selection_geometry_round_trips_through_a_url() -> None:
    event = {"selection": {"box": [{"x": [1, 2], "y": [3, 4]}], "lasso": [{"x": [0, 5, 5], "y": [0, 0, 5]}]}}
    text = embedmap.encode_geometry(event)
    assert text and re.fullmatch(r"[A-Za-z0-9_-]+", text)
    shapes = embedmap.decode_geometry(text)
    assert np.array_equal(
        selection.geometry_positions(embedmap.as_event(shapes), np.array([[1.5, 3.5], [4, 1], [0.5, 4]])),
        [0, 1],
    )
    assert embedmap.decode_geometry("garbage") == []
    assert embedmap.encode_geometry({"selection": {"box": [], "lasso": []}}) is None


HOSTILE = [
    "![x](http://evil.example/t.png)",
    '<img src="http://evil.example/x.png" onerror="alert(1)">',
    "[a](javascript:alert(1))",
    ":red[x] :material/home: $x$ **b** `c` # h\n> q\n| t |",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_escaping_leaves_no_markup(text: str) -> None:
    out = safetext.md(text)
    assert "\n" not in out
    # Every ASCII punctuation character is escaped: no construct can start.
    assert not re.search(r"(?<!\\)[!\[\]()<>`*_:$#|]", out.replace("\\\\", ""))
    shown = re.sub(r"\\(.)", r"\1", out)
    assert shown.replace("\u2060", "") == text.replace("\n", " ")
    # GitHub-flavoured autolinks cannot start: "://" and "www." are broken by an invisible word joiner.
    assert not re.search(r"://[A-Za-z0-9]|www\.", shown)


@pytest.mark.parametrize("text", [*HOSTILE, "a`b``c", "```"])
def test_code_spans_hold_any_text_verbatim(text: str) -> None:
    out = safetext.code(text)
    fence = re.match(r"`+", out)
    assert fence is not None
    inner = out[len(fence.group()) + 1 : -len(fence.group()) - 1]
    assert inner == text.replace("\n", " ") and fence.group() not in inner


def test_html_escaping() -> None:
    assert safetext.html_text('<img src="x">') == "&lt;img src=&quot;x&quot;&gt;"


def test_no_page_relies_on_streamlit_magic() -> None:
    """``spray dashboard`` runs with ``runner.magicEnabled=false`` (no syntax-tree rewrite on a page's first
    visit): a bare expression meant for display would silently show nothing. Streamlit's own transformer is
    the oracle: it may add its import, never a call."""
    from streamlit.runtime.scriptrunner.magic import add_magic

    from spray import serve

    argv, _ = serve.build_command(Path("runs"))
    assert argv[argv.index("--runner.magicEnabled") + 1] == "false"
    root = Path(__file__).resolve().parent.parent / "dashboard"
    files = sorted(root.rglob("*.py"))
    assert len(files) > 10
    for f in files:
        code = ast.unparse(add_magic(f.read_text(), str(f)))
        assert code.count("__streamlitmagic__") <= 1, f"{f.name} writes through Streamlit magic"
    # The oracle does see a bare expression.
    assert ast.unparse(add_magic("x = 1\nx\n", "x.py")).count("__streamlitmagic__") == 2


def test_thumbnails_larger_than_the_grid_are_averaged_down() -> None:
    import samplegrid

    # A 1-pixel checkerboard of black and white: averaged, every shown pixel is mid-grey (nearest would
    # keep black and white pixels, i.e. alias).
    board = ((np.indices((192, 192)).sum(0) % 2) * 255).astype(np.uint8)
    pics = np.repeat(board[None, :, :, None], 3, axis=3).repeat(2, axis=0)
    out = samplegrid.shrink(pics, 96)
    assert out.shape == (2, 96, 96, 3) and out.dtype == np.uint8
    assert np.all(np.abs(out.astype(int) - 128) <= 1)


def test_a_truncated_selection_is_named_in_one_plain_sentence() -> None:
    text = urlstate.encode_ids([str(i) for i in range(500)])
    with pytest.raises(ValueError) as info:
        urlstate.decode_ids(text[: len(text) // 2])
    message = str(info.value)
    assert "truncated or damaged" in message and "Error" not in message and "decompress" not in message


def test_the_page_icon_is_drawn_locally() -> None:
    import common

    icon = np.asarray(common.page_icon())
    assert icon.shape == (32, 32, 4) and icon[..., 3].any()  # an image, not a :material/...: name


def test_a_trial_run_is_not_compared_with_its_full_audits_run(tmp_path: Path) -> None:
    """A review: the dashboard took the newest older run of the same dataset as a run's previous one, so a
    ``data.limit`` trial was compared with the full audit's run (and the full audit's next run with the trial),
    where the nightly job compares runs of one audit."""
    import json

    import common

    from tests.dashboard_fixtures import make_synthetic_run

    full = make_synthetic_run(tmp_path, seed=1, run_id="a" * 64)
    trial = make_synthetic_run(tmp_path, seed=2, run_id="b" * 64)
    doc = json.loads((trial / "summary.json").read_text())
    doc.setdefault("config", {}).setdefault("data", {})["limit"] = 100
    (trial / "summary.json").write_text(json.dumps(doc))
    again = make_synthetic_run(tmp_path, seed=3, run_id="c" * 64)
    runs, dataset = str(tmp_path), "synthetic-fashion"
    assert common.previous_run(runs, trial.name, dataset) is None
    assert common.previous_run(runs, again.name, dataset) == full.name


def test_the_picture_keeps_the_maps_proportions() -> None:
    """An outside check: the first-paint picture scaled x and y apart, so a class 2.6× taller than wide was
    drawn square while the interactive map kept its proportions."""
    rng = np.random.default_rng(0)
    emb = rng.random((500, 2)) * [1.0, 2.6] + [5.0, -3.0]
    xy = embedmap._quantised(emb)
    assert xy.min() >= 0 and xy.max() <= embedmap.QMAX
    width, height = np.ptp(xy, axis=0)
    assert abs(height / width - 2.6) < 0.05 and abs(height - embedmap.QMAX) <= 1
    assert abs((xy[:, 0].min() + xy[:, 0].max()) / 2 - embedmap.QMAX / 2) <= 1  # the narrow axis centred
