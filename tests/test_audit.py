"""End to end: a tiny planted Fashion-MNIST (or digits) dataset, a real trained CNN, the real audit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from spray.audit import audit, load_report
from spray.cli import main
from spray.config import AuditConfig, load_config
from spray.lab.demo import GroundTruth, prepare_demo, score_against_truth
from spray.runs.publish import list_runs
from spray.runs.reader import RunReader
from tests.helpers import make_image_folder, small_folder_config


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("planted")
    return prepare_demo(work, work / "runs", per_class=120, epochs=3, seed=0)


def _fast(cfg: AuditConfig, runs_dir: Path) -> AuditConfig:
    cfg.output.runs_dir = runs_dir
    cfg.analysis.embedding = "spectral"
    cfg.analysis.classes = [0, 6, 8]  # the planted class (Shirt) and two clean ones keep the test quick
    cfg.scoring.intervention_samples = 60
    return cfg


def test_planted_samples_are_the_top_finding(
    planted: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _fast(load_config(planted), tmp_path / "runs")
    report = audit(cfg, progress=False)
    truth = GroundTruth.load(planted.parent)
    score = score_against_truth(report, truth)
    assert score.top_is_planted_class, report.findings[0].evidence
    assert score.f1 >= 0.8, score
    top = report.findings[0]
    assert top.suspicious
    assert any("top left" in e for e in top.evidence)

    # The published run has the documented layout and the typed report round-trips from disk.
    run = Path(report.run_dir)
    assert run.parent == cfg.output.runs_dir and (run.parent / "latest").resolve() == run
    for name in ("summary.json", "samples.parquet", "heatmaps.npy", "thumbs.npy", "classes/6.npz"):
        assert (run / name).exists(), name
    reader = RunReader.open(run)
    assert reader.finding(top.key).member_ids == top.member_ids
    assert set(reader.summary.hashes) == {"model", "data", "config", "code", "model_hash_version"}
    # The model's accuracy on the audited samples is recorded (a trained model: far above chance).
    acc = reader.summary.extra["model_accuracy"]
    assert acc["n_samples"] == report.n_samples and acc["accuracy"] > 0.5 and not acc["near_chance"]
    assert not reader.summary.extra["heatmap_contrast"]["flat"]  # the small CNN's maps have contrast
    # The full resolved config is recorded, every scoring constant included.
    assert reader.summary.config["scoring"] == cfg.scoring.model_dump(mode="json")
    c6 = reader.summary.class_summary(6)
    assert c6 is not None and c6.chosen_k >= 2
    assert reader.class_data(6).eigenvalues[0] == pytest.approx(1.0, abs=1e-6)
    again = load_report(run)
    assert [f.key for f in again.findings] == [f.key for f in report.findings]
    assert again.findings[0].member_ids == top.member_ids and again.findings[0].score == top.score
    np.testing.assert_array_equal(
        again.classes[1].clustering.labellings[2], report.classes[1].clustering.labellings[2]
    )
    np.testing.assert_array_equal(
        again.classes[1].spectral.knn_distances, report.classes[1].spectral.knn_distances
    )

    # Same inputs: the second call is a no-op that returns the published report.
    second = audit(cfg, progress=False)
    assert second.up_to_date and second.run_id == report.run_id
    assert len(list_runs(cfg.output.runs_dir)) == 1
    # Settings outside the run id that the reused run keeps from when it was made: reused, and said so.
    cfg.output.html_report, cfg.nightly.match_jaccard, cfg.concepts.references = False, 0.9, 3
    with caplog.at_level("WARNING", logger="spray.audit"):
        third = audit(cfg, progress=False)
    assert third.up_to_date and third.run_id == report.run_id
    kept = [r.getMessage() for r in caplog.records if "keeps the settings it was made with" in r.getMessage()]
    assert len(kept) == 1, caplog.text
    for said in (
        "output.html_report (True → False)",
        "nightly.match_jaccard (0.3 → 0.9)",
        "concepts.references (8 → 3)",
    ):
        assert said in kept[0]


def test_same_seed_gives_identical_summary(planted: Path, tmp_path: Path) -> None:
    docs = []
    for name in ("a", "b"):
        cfg = _fast(load_config(planted), tmp_path / name)
        cfg.analysis.classes = [6]
        r = audit(cfg, progress=False)
        d = json.loads((Path(r.run_dir) / "summary.json").read_text())
        d.pop("timings")
        d["config"].pop("output")  # where the run was published
        docs.append(d)
    assert docs[0] == docs[1]


def test_inputs_kept_in_memory_change_no_result(planted: Path, tmp_path: Path) -> None:
    # the paste tests read the batch stage's decoded inputs from memory: the same values as a new decode
    docs = []
    for name, memory_mb in (("kept", 512), ("decoded", 0)):
        cfg = _fast(load_config(planted), tmp_path / name)
        cfg.analysis.classes = [6]
        cfg.batch.input_memory_mb = memory_mb
        r = audit(cfg, progress=False)
        d = json.loads((Path(r.run_dir) / "summary.json").read_text())
        assert d["config"]["batch"]["input_memory_mb"] == memory_mb  # recorded in the run
        docs.append({k: v for k, v in d.items() if k not in ("timings", "config", "hashes", "run_id")})
    assert docs[0]["findings"] and docs[0] == docs[1]


def _write_cfg(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _folder_cfg(tmp_path: Path, **model: object) -> dict:
    return small_folder_config(tmp_path, **model)


def test_corrupt_and_non_image_files_are_skipped_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _folder_cfg(tmp_path)
    (tmp_path / "imgs" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    (tmp_path / "imgs" / "dog" / "README.txt").write_text("hi")
    assert main(["audit", "--config", str(_write_cfg(tmp_path, raw)), "-q"]) == 0
    out = capsys.readouterr()
    assert "2 samples skipped" in out.out
    (run,) = list_runs(tmp_path / "runs")
    reasons = {s.sample_id: s.reason for s in RunReader.open(run).summary.skipped}
    assert set(reasons) == {"cat/broken.png", "dog/README.txt"}
    assert "corrupt" in reasons["cat/broken.png"] and "not an image" in reasons["dog/README.txt"]


def test_batch_stage_counts_an_unreadable_sample_as_skipped_not_cached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 24 readable images and a corrupt one: the skipped file is neither computed nor taken from the cache
    raw = _folder_cfg(tmp_path)
    (tmp_path / "imgs" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    (tmp_path / "imgs" / "dog" / "notes.txt").write_text("not an image")  # skipped before the batch stage
    cfg = str(_write_cfg(tmp_path, raw))
    assert main(["audit", "--config", cfg]) == 0
    err = capsys.readouterr().err
    # one count of each kind, so that the log adds up to the run's 2 skipped (found in an outside check)
    assert (
        "24 samples computed, 0 taken from the cache, 1 unreadable (skipped; 1 more were skipped before it"
        in err
    )
    assert "24 samples computed in this run, 0 taken from the cache" in err
    assert main(["audit", "--config", cfg, "--force"]) == 0  # the same model: every sample is cached
    err = capsys.readouterr().err
    assert "0 samples computed, 24 taken from the cache, 1 unreadable (skipped; 1 more" in err
    assert "0 samples computed in this run, 24 taken from the cache" in err


def test_a_file_name_that_is_not_utf8_is_skipped_and_named(tmp_path: Path) -> None:
    """An outside check: a Latin-1 name from an old zip archive stopped the audit with a raw
    UnicodeEncodeError (an image), or at the very end in report.html (another file)."""
    import os

    from spray.data import build_dataset
    from spray.errors import DataError

    raw = _folder_cfg(tmp_path)
    imgs = os.fsencode(tmp_path / "imgs")
    os.link(os.fsencode(tmp_path / "imgs" / "cat" / "000.png"), imgs + b"/cat/caf\xe9.png")
    (tmp_path / "imgs" / "dog" / "000.png").rename(tmp_path / "imgs" / "dog" / "notes.txt")
    os.rename(os.fsencode(tmp_path / "imgs" / "dog" / "notes.txt"), imgs + b"/dog/caf\xe9.txt")
    os.link(os.fsencode(tmp_path / "imgs" / "cat" / "001.png"), imgs + b"/cat/.caf\xe9.png")
    assert main(["audit", "--config", str(_write_cfg(tmp_path, raw)), "-q"]) == 0
    (run,) = list_runs(tmp_path / "runs")
    reasons = {s.sample_id: s.reason for s in RunReader.open(run).summary.skipped}
    assert set(reasons) == {"cat/caf\\xe9.png", "dog/caf\\xe9.txt", "cat/.caf\\xe9.png"}
    hidden = reasons.pop("cat/.caf\\xe9.png")
    assert all("not valid UTF-8" in r and "convmv" in r for r in reasons.values())
    # a hidden file is left out whatever its name: no advice to rename it
    assert "hidden" in hidden and "convmv" not in hidden
    assert (run / "report.html").is_file()
    # a class folder cannot be left out (the labels after it would shift): refused, named
    os.mkdir(imgs + b"/b\xe4r")
    with pytest.raises(DataError, match=r"class folder 'b\\\\xe4r' .* not valid UTF-8"):
        build_dataset(load_config(tmp_path / "cfg.yaml").data)


def test_a_folder_whose_images_came_to_have_another_size_is_audited_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: the first run skipped a few 32×32 images among 28×28 ones; once new 32×32 images
    were the majority, the next run took the 28×28 heatmaps from the cache without decoding them (so
    without the size check) and stopped with a raw broadcasting error, every night."""
    raw = _folder_cfg(tmp_path)
    raw["model"] = {"factory": "tests.model_factories:tiny"}  # global pooling: any input size
    for c in ("cat", "dog"):
        make_image_folder(tmp_path / "more", n_per_class=14, classes=(c,), size=32)
        for i, f in enumerate(sorted((tmp_path / "more" / c).glob("*.png"))):
            if i < 2:  # two strays of another size in the first run
                f.rename(tmp_path / "imgs" / c / f"odd{i}.png")
    cfg = str(_write_cfg(tmp_path, raw))
    assert main(["audit", "--config", cfg, "-q"]) == 0
    (first,) = list_runs(tmp_path / "runs")
    assert len(RunReader.open(first).summary.skipped) == 4
    for c in ("cat", "dog"):  # now 14 of 26 images per class are 32×32
        for f in sorted((tmp_path / "more" / c).glob("*.png")):
            f.rename(tmp_path / "imgs" / c / f"new_{f.name}")
    capsys.readouterr()
    assert main(["audit", "--config", cfg, "-q"]) == 0
    runs = list_runs(tmp_path / "runs")
    skipped = RunReader.open(next(r for r in runs if r != first)).summary.skipped
    assert len(skipped) == 24 and all("28×28 input" in s.reason for s in skipped)


@pytest.mark.parametrize(
    ("mutate", "code", "message"),
    [
        (lambda r: r["model"].update(checkpoint="missing.pt"), 2, "model.checkpoint: file or folder"),
        (
            lambda r: r["model"]["factory_kwargs"].update(num_classes=1),
            1,
            "has 1 outputs but the dataset has 2 classes",
        ),
        (lambda r: r.update(anlysis={}), 2, "Did you mean 'analysis'"),
        (lambda r: r["data"].update(path="nowhere"), 2, "data.path"),
        # colour images for a grey model: the first convolution's 1 channel is taken, each image refused
        (
            lambda r: r["model"]["factory_kwargs"].update(in_channels=1),
            1,
            "set data.transform.colour_to_grey: luma",
        ),
        # a class folder deleted: every later folder's label would shift (silently, before)
        (
            lambda r: r["model"]["factory_kwargs"].update(num_classes=3),
            1,
            "The model has 3 outputs but data.path has 2 class folders",
        ),
    ],
)
def test_bad_inputs_exit_with_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate, code, message
) -> None:  # type: ignore[no-untyped-def]
    raw = _folder_cfg(tmp_path)
    mutate(raw)
    assert main(["audit", "--config", str(_write_cfg(tmp_path, raw)), "-q"]) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_wrong_num_classes_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from spray.lab.cnn import small_cnn

    torch.save(small_cnn(in_channels=3, num_classes=5).state_dict(), tmp_path / "w.pt")
    raw = _folder_cfg(tmp_path, checkpoint="w.pt")
    assert main(["audit", "--config", str(_write_cfg(tmp_path, raw)), "-q"]) == 1
    err = capsys.readouterr().err
    assert "checkpoint (5, 128) vs model (2, 128)" in err and "Traceback" not in err


def test_a_failed_write_leaves_no_staging_folder(
    planted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the run is written: the half-written staging folder is removed, nothing published."""
    import spray.audit as audit_module
    from spray.runs.errors import RunWriteError

    def full_disk(staged: Path, *args: object) -> None:
        (staged / "summary.json").write_text("{")  # what was written before the disk filled up
        raise RunWriteError(staged, "No space left on device")

    monkeypatch.setattr(audit_module, "write_run", full_disk)
    cfg = _fast(load_config(planted), tmp_path / "runs")
    with pytest.raises(RunWriteError, match="No space left"):
        audit(cfg, progress=False)
    assert not list((tmp_path / "runs" / ".staging").iterdir())
    assert list_runs(tmp_path / "runs") == []


def test_files_imagefolder_reads_otherwise_are_recorded_in_the_run(tmp_path: Path) -> None:
    """An outside check: the notes on files ImageFolder reads otherwise (16-bit, .gif) reached only stderr,
    not summary.json, report.html or the dashboard, so a nightly job's reader never saw them."""
    from PIL import Image

    raw = _folder_cfg(tmp_path)
    Image.fromarray(np.full((28, 28), 200, np.uint16)).save(tmp_path / "imgs" / "cat" / "deep.png")
    assert main(["audit", "--config", str(_write_cfg(tmp_path, raw)), "-q"]) == 0
    (run,) = list_runs(tmp_path / "runs")
    from spray.accuracy import data_notes, recorded_problems

    extra = RunReader.open(run).summary.extra
    notes = extra["loader_differences"]
    assert any("hold none above 255" in n or "holds none above 255" in n for n in notes)
    page = (run / "report.html").read_text()
    assert "About the data.</b>" in page and "high_bit_depth: clip" in page
    # a review: notes on the files, not checks of the model (the nightly status kept them apart too)
    assert data_notes(extra) == notes and not set(notes) & set(recorded_problems(extra))


def test_a_model_at_chance_is_named_in_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model that answers one class whatever it sees: the run's record, report.html, the rerun that reuses
    the run, and the nightly job's status line all say so (the findings alone would look clean)."""
    import torch

    from spray.lab.cnn import small_cnn

    m = small_cnn(in_channels=3, num_classes=2)
    with torch.no_grad():
        m.classifier[-1].bias.copy_(torch.tensor([100.0, -100.0]))
    torch.save(m.state_dict(), tmp_path / "w.pt")
    cfg = _write_cfg(tmp_path, _folder_cfg(tmp_path, checkpoint="w.pt"))
    assert main(["audit", "--config", str(cfg), "-q"]) == 0
    (run,) = list_runs(tmp_path / "runs")
    acc = RunReader.open(run).summary.extra["model_accuracy"]
    assert acc["accuracy"] == 0.5 and acc["near_chance"] and acc["shifted"] == {"dog": "cat"}
    page = (run / "report.html").read_text()
    assert "Check the model first." in page and "pixel and concept space (layer <code>" in page
    assert re.search(r"the model gives the true label for \d+\.\d % of the \d+ audited images", page)
    capsys.readouterr()
    assert main(["audit", "--config", str(cfg), "-q"]) == 0  # up to date: the run is reused
    assert "the published run's check of the model" in capsys.readouterr().err
    main(["run", "--config", str(cfg), "--log-format", "text"])
    status = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status["model_accuracy"] == 0.5 and any(
        "true label for only 50%" in w for w in status["model_warnings"]
    )


def test_flat_heatmaps_of_a_convnext_under_z_plus_are_named_in_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """EpsilonPlusFlat spreads a ConvNeXt's relevance almost evenly (seen in an outside check): the run says
    its heatmaps are flat instead of looking clean; EpsilonGammaBox gives the same model contrast."""
    pytest.importorskip("timm")
    raw = _folder_cfg(tmp_path)
    raw["data"]["transform"] = {"resize": 32}  # the 28-pixel images: too small for ConvNeXt's four stages
    raw["model"] = {
        "factory": "timm:create_model",
        "factory_kwargs": {"model_name": "convnext_atto", "num_classes": 2, "pretrained": False},
    }
    raw["lrp"] = {"concept_layer": "none"}
    cfg = _write_cfg(tmp_path, raw)
    assert main(["audit", "--config", str(cfg), "-q"]) == 0
    assert "heatmaps are nearly flat" in capsys.readouterr().err
    (run,) = list_runs(tmp_path / "runs")
    contrast = RunReader.open(run).summary.extra["heatmap_contrast"]
    assert contrast["flat"] and contrast["median_cv"] < 0.3 and contrast["n_samples"] == 24
    page = (run / "report.html").read_text()
    assert "heatmaps are nearly flat" in page
    # lrp.concept_layer none: the default yields, and the page names the setting that made it
    assert "pixel space only (lrp.concept_layer is &#x27;none&#x27;)" in page
    raw["lrp"]["composite"] = "EpsilonGammaBox"
    assert main(["audit", "--config", str(_write_cfg(tmp_path, raw)), "-q"]) == 0
    assert "nearly flat" not in capsys.readouterr().err
    box = RunReader.open(list_runs(tmp_path / "runs")[0]).summary.extra["heatmap_contrast"]
    assert not box["flat"] and box["median_cv"] > 2 * contrast["median_cv"]


def test_a_rule_registered_in_the_factory_module_reaches_the_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The unsupported-layer message tells a config user where register_layer_rule goes: the module of the
    model factory, imported before the audit explains; done there, the audit runs."""
    from spray.lrp import composites

    body = (
        "import torch\nfrom torch import nn\n\n\nclass Scale(nn.Module):\n"
        "    def forward(self, x):\n        return 2 * x\n\n\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), Scale(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), "
        "nn.Linear(4, 2))\n"
    )
    register = (
        "\nfrom spray.lrp.composites import register_layer_rule\nfrom spray.lrp.rules import Pass\n"
        + ("register_layer_rule(Scale, Pass())\n")
    )
    raw = _folder_cfg(tmp_path)
    raw["lrp"] = {"concept_layer": "none"}
    for name, text, code in (("scale_plain", body, 1), ("scale_registered", body + register, 0)):
        (tmp_path / f"{name}.py").write_text(text)
        raw["model"] = {"factory": f"{name}:build"}
        res = main(["audit", "--config", str(_write_cfg(tmp_path, raw)), "-q"])
        err = capsys.readouterr().err
        assert res == code, err
        if code:
            assert "no LRP rule" in err and "the module of your model factory" in err
    for kind in [k for k in composites._USER_RULES if k.__module__ == "scale_registered"]:
        composites._USER_RULES.pop(kind)


def test_every_class_too_small_is_said_aloud(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _folder_cfg(tmp_path)
    raw["analysis"]["min_class_size"] = 50  # the folder has 12 images per class
    assert main(["audit", "--config", str(_write_cfg(tmp_path, raw)), "-q"]) == 0
    err = capsys.readouterr().err
    assert "no class has analysis.min_class_size = 50 samples (the largest has 12)" in err


def test_many_skipped_files_are_named_up_to_a_cap_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sidecar file in every folder (an outside check: Thumbs.db, .json, .txt) gave one WARNING each,
    also under -q: the first ten are named, the rest counted; every one stays in summary.json."""
    from spray.audit import SKIPPED_LOGGED
    from tests.runs.builders import tiny_config

    cfg = tiny_config(tmp_path)
    for i in range(SKIPPED_LOGGED + 3):
        (tmp_path / "imgs" / "cat" / f"notes{i:02d}.png").write_text("not an image")
    with caplog.at_level("WARNING", logger="spray.audit"):
        report = audit(cfg, progress=False)
    named = [r for r in caplog.records if r.getMessage().startswith("skipped sample")]
    assert len(named) == SKIPPED_LOGGED
    assert f"... and 3 more skipped samples ({SKIPPED_LOGGED + 3} in all)" in caplog.text
    summary = json.loads((Path(report.run_dir) / "summary.json").read_text())
    assert len(summary["skipped"]) == SKIPPED_LOGGED + 3
