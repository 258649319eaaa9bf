"""``spray init`` (spray.scaffold): a commented config from what is on disk, checked on one batch."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from spray.config import load_config
from spray.data import write_idx
from tests.faults.cli import assert_clean_failure, run_main
from tests.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[1]


def test_image_folder_and_torchvision_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_image_folder(tmp_path / "train", n_per_class=3, size=40)
    make_image_folder(tmp_path / "train", n_per_class=1, classes=("cat",), size=50)  # sizes vary: resize/crop
    out = tmp_path / "audit.yaml"
    res = run_main(["init", "--data", str(tmp_path / "train"), "--model", "resnet18", "-o", str(out)], capsys)
    assert res.code == 0, res.output
    assert "ok: one batch read: inputs (3, 224, 224)" in res.stdout and "ok: model: 2 outputs" in res.stdout
    assert f"spray audit --config {out}" in res.stdout
    text = out.read_text()
    assert (
        "# CHECK resize/center_crop" in text
        and "# CHECK model.checkpoint: none given, so the weights are random" in text
        and "architecture: resnet18    # torchvision model name, e.g. 'resnet18'" in text
    )
    cfg = load_config(out)
    assert cfg.model.architecture == "resnet18" and cfg.model.num_classes == 2
    assert cfg.data.path == (tmp_path / "train").resolve() and "path: train" in text  # relative to the config
    # the flag key: the folder's name made unique by its path when init ran (every project's "train"
    # shares the name), written into the config so that moving the project keeps it
    assert re.fullmatch(r"train-[0-9a-f]{8}", cfg.dataset_key())
    other = tmp_path / "elsewhere" / "train"
    make_image_folder(other, n_per_class=3, size=40)
    out2 = tmp_path / "elsewhere" / "audit.yaml"
    assert run_main(["init", "--data", str(other), "--model", "resnet18", "-o", str(out2)], capsys).code == 0
    assert load_config(out2).dataset_key() != cfg.dataset_key()
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("moved", "elsewhere"))
    assert load_config(moved / "audit.yaml").dataset_key() == cfg.dataset_key()
    assert (cfg.data.transform.resize, cfg.data.transform.center_crop) == (256, 224)
    assert cfg.data.transform.mean == [0.485, 0.456, 0.406]
    assert cfg.batch.batch_size == 32  # inputs of 224²: the pixels of 32 such images a batch


def test_never_overwrites_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_image_folder(tmp_path / "train", n_per_class=2)
    out = tmp_path / "spray.yaml"
    out.write_text("# mine\n")
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "resnet18", "-o", str(out), "--no-check"]
    assert_clean_failure(run_main(argv, capsys), 2, "spray.yaml", "already exists", "--force")
    assert out.read_text() == "# mine\n"
    assert run_main([*argv, "--force"], capsys).code == 0 and "resnet18" in out.read_text()


@pytest.mark.parametrize(("arch", "side"), [("vit_b_16", 224), ("inception_v3", 299)])
def test_fixed_size_architecture_gets_its_input_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arch: str, side: int
) -> None:
    # ViT fails on any other size than its own and Inception on small inputs: images of 40×40 are resized.
    make_image_folder(tmp_path / "train", n_per_class=2, size=40)
    out = tmp_path / "spray.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", arch, "-o", str(out), "--no-check"]
    assert run_main(argv, capsys).code == 0
    text = out.read_text()
    assert f"the architecture takes only {side}×{side} inputs, so the 40×40 images are resized" in text
    t = load_config(out).data.transform
    assert (t.resize, t.center_crop) == (side, side)


def test_resnet_keeps_small_images_at_their_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_image_folder(tmp_path / "train", n_per_class=2, size=40)
    out = tmp_path / "spray.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "resnet18", "-o", str(out), "--no-check"]
    assert run_main(argv, capsys).code == 0
    assert "the 40×40 images are used at their size" in out.read_text()
    assert load_config(out).data.transform.resize is None


def test_a_few_images_of_another_size_do_not_resize_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: 1,200 of 1,217 images were 32×32 and a few others larger; init wrote resize 256 and
    center_crop 224 (the architecture's default), its own check said 27 % right, about chance, and the audit
    ran 10× slower. The audit takes the size most images have and skips the others with a reason."""
    make_image_folder(tmp_path / "train", n_per_class=20, size=32)
    make_image_folder(tmp_path / "train", n_per_class=1, classes=("cat",), size=48)
    out = tmp_path / "spray.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "resnet18", "-o", str(out), "--no-check"]
    assert run_main(argv, capsys).code == 0
    text = out.read_text()
    assert load_config(out).data.transform.resize is None and "images are used at their size" in text
    assert "are not 32×32 (48×48): the audit skips images of another size" in text


def test_one_unreadable_file_does_not_fail_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: one zero-byte PNG among 91 failed init's accuracy spot check ("became unreadable
    during the audit", exit 1, the config marked FAILED) while the audit skips and lists such a file."""
    make_image_folder(tmp_path / "train", n_per_class=20, size=32)
    for f in sorted((tmp_path / "train" / "dog").glob("*.png"))[:3]:
        f.write_bytes(b"")
    out = tmp_path / "spray.yaml"
    res = run_main(["init", "--data", str(tmp_path / "train"), "--model", "resnet18", "-o", str(out)], capsys)
    assert res.code == 0, res.stderr
    assert "FAILED" not in out.read_text()


def test_idx_files_and_a_factory_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(40, dtype=np.uint8) % 4)
    out = tmp_path / "cfg" / "mnist.yaml"
    argv = [
        "init",
        "--data",
        str(tmp_path / "train-images-idx3-ubyte.gz"),
        "--model",
        "spray.lab.cnn:small_cnn",
        "-o",
        str(out),
    ]
    res = run_main(argv, capsys)
    assert res.code == 0, res.output
    cfg = load_config(out)
    assert cfg.data.kind == "idx" and cfg.data.labels == (tmp_path / "train-labels-idx1-ubyte.gz").resolve()
    assert cfg.model.factory_kwargs == {"num_classes": 4, "in_channels": 1}
    assert cfg.data.transform.resize is None  # 28×28 images are taken at their size
    assert cfg.batch.batch_size == 128  # small inputs get large batches (capped at 128)
    assert "ok: one batch read: inputs (1, 28, 28)" in res.stdout and "(grey)" in res.stdout
    # the model's accuracy on images of every class, so that a wrong normalisation shows before the audit
    assert re.search(r"\n  CHECK model: \d+ % right on 40 images spread over the classes", res.stdout), (
        res.stdout
    )
    # random weights on random images, 4 classes: said to be about chance level (25 %)
    assert re.search(r"\(about chance level: 25 %\)", res.stdout), res.stdout


def test_all_zero_maps_are_a_check_not_an_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An outside check: with all-zero relevance maps (random weights absorbed by the stabiliser) init
    warned of them and then printed "ok: LRP: ... explained that batch"."""
    make_image_folder(tmp_path / "train", n_per_class=2, size=16)
    out = tmp_path / "z.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "tests.model_factories:constant_head"]
    res = run_main([*argv, "-o", str(out)], capsys)
    assert res.code == 0, res.output
    assert "CHECK LRP: EpsilonPlusFlat gave 2 of 2 maps of that batch that are exactly 0" in res.stdout
    assert "explained that batch" not in res.stdout


def test_factory_dataset_next_to_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(REPO / "configs" / "digits_data.py", tmp_path / "digits_data.py")
    out = tmp_path / "digits.yaml"
    res = run_main(
        ["init", "--data", "digits_data:digits", "--model", "spray.lab.cnn:small_cnn", "-o", str(out)], capsys
    )
    # 8×8 digits for a CNN built for 28×28 inputs: the check runs the model and says so, the config is kept
    assert_clean_failure(res, 1, "The model fails on an input of shape (2, 1, 8, 8)", "data.transform")
    raw = yaml.safe_load(out.read_text())
    assert raw["data"] == {"kind": "factory", "factory": "digits_data:digits", "name": raw["data"]["name"]}
    assert re.fullmatch(r"digits-[0-9a-f]{8}", raw["data"]["name"])
    res = run_main(["init", "--data", "digits_data:digits", "-o", str(tmp_path / "x.yaml")], capsys)
    assert res.code == 0 and "ok: data: 1797 samples, 10 classes" in res.stdout


def test_a_model_the_audit_cannot_explain_fails_inits_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: a model with its input normalisation inside passed `spray init`'s check ("ok: model")
    and the audit then refused it; the check now explains its batch as the audit will."""
    make_image_folder(tmp_path / "train", n_per_class=2, size=16)
    (tmp_path / "wrapped_model_for_init.py").write_text(
        "import torch\n"
        "class Norm(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.register_buffer('mean', torch.full((1, 3, 1, 1), 0.5))\n"
        "        self.register_buffer('std', torch.full((1, 3, 1, 1), 0.25))\n"
        "    def forward(self, x):\n"
        "        return (x - self.mean) / self.std\n"
        "def build(num_classes=2):\n"
        "    return torch.nn.Sequential(Norm(), torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),\n"
        "                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, num_classes))\n"
    )
    out = tmp_path / "spray.yaml"
    argv = [
        "init",
        "--data",
        str(tmp_path / "train"),
        "--model",
        "wrapped_model_for_init:build",
        "-o",
        str(out),
    ]
    res = run_main(argv, capsys)
    assert_clean_failure(res, 1, "0: if it normalises the input", "register_layer_rule(Norm")


def test_unknown_model_name_suggests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_image_folder(tmp_path / "train", n_per_class=1)
    res = run_main(
        ["init", "--data", str(tmp_path / "train"), "--model", "resnet181", "-o", str(tmp_path / "a.yaml")],
        capsys,
    )
    assert_clean_failure(res, 2, "--model 'resnet181'", "Did you mean", "'resnet18'")
    assert not (tmp_path / "a.yaml").exists()


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ("nowhere/at/all", ("--data 'nowhere/at/all'", "not a folder")),
        ("idx_only.gz", ("--labels",)),
        ("train/cat/000.png", ("is one image", "a subfolder per class")),
    ],
)
def test_bad_data_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: str, names: tuple[str, ...]
) -> None:
    write_idx(tmp_path / "idx_only.gz", np.zeros((2, 4, 4), np.uint8))
    make_image_folder(tmp_path / "train", n_per_class=1)
    arg = str(tmp_path / data) if data.endswith((".gz", ".png")) else data
    res = run_main(["init", "--data", arg, "--model", "resnet18", "-o", str(tmp_path / "a.yaml")], capsys)
    assert_clean_failure(res, 2, *names)


def test_without_a_model_checks_the_data_and_leaves_a_placeholder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "train"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (16, 16), 30 * i).save(root / c / f"{i}.png")
    out = tmp_path / "a.yaml"
    res = run_main(["init", "--data", str(root), "-o", str(out)], capsys)
    assert res.code == 0, res.output
    assert "ok: one batch read: inputs (1, 16, 16)" in res.stdout and "model: not checked" in res.stdout
    assert "CHECK model" in out.read_text() and "my_project.models:build" in out.read_text()


def test_init_then_audit_gives_a_ranked_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's five-minute path on a tiny folder: init, audit with the written config as it is."""
    make_image_folder(tmp_path / "train", n_per_class=24, size=28)
    out = tmp_path / "spray.yaml"
    assert (
        run_main(
            ["init", "--data", str(tmp_path / "train"), "--model", "spray.lab.cnn:small_cnn", "-o", str(out)],
            capsys,
        ).code
        == 0
    )
    res = run_main(["audit", "--config", str(out), "-q"], capsys)
    assert res.code == 0, res.output
    assert "rank" in res.stdout.lower() or "score" in res.stdout.lower()
    assert list((tmp_path / "runs").glob("2*/summary.json"))


@pytest.mark.slow
def test_model_args_reach_the_constructor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(40, dtype=np.uint8) % 4)
    images = str(tmp_path / "train-images-idx3-ubyte.gz")
    argv = ["init", "--data", images, "--model", "spray.lab.cnn:small_cnn", "-o", str(tmp_path / "a.yaml")]
    res = run_main([*argv, "--model-arg", "width=8"], capsys)
    assert res.code == 0, res.output
    kwargs = load_config(tmp_path / "a.yaml").model.factory_kwargs
    assert kwargs == {"num_classes": 4, "in_channels": 1, "width": 8}
    # A checkpoint of the narrow model loads only because the width was passed on.
    from spray.lab.cnn import small_cnn

    torch = pytest.importorskip("torch")
    torch.save(small_cnn(in_channels=1, num_classes=4, width=8).state_dict(), tmp_path / "w8.pt")
    ckpt = ["--checkpoint", str(tmp_path / "w8.pt"), "--force"]
    assert run_main([*argv, *ckpt, "--model-arg", "width=8"], capsys).code == 0
    assert_clean_failure(run_main([*argv, *ckpt], capsys), 1, "--model-arg KEY=VALUE")
    # A name the constructor does not take, a malformed item, and arguments with no model: said clearly.
    bad = run_main([*argv, "--force", "--model-arg", "depth=3"], capsys)
    assert_clean_failure(bad, 2, "depth")
    assert_clean_failure(run_main([*argv, "--force", "--model-arg", "width"], capsys), 2, "KEY=VALUE")
    no_model = ["init", "--data", images, "-o", str(tmp_path / "b.yaml"), "--model-arg", "width=8"]
    assert_clean_failure(run_main(no_model, capsys), 2, "--model-arg needs --model")


def test_torchvision_model_args_go_to_architecture_kwargs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_image_folder(tmp_path / "train", n_per_class=2, size=32)
    out = tmp_path / "t.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "resnet18", "-o", str(out)]
    res = run_main([*argv, "--model-arg", "zero_init_residual=true"], capsys)
    assert res.code == 0, res.output
    assert load_config(out).model.architecture_kwargs == {"zero_init_residual": True}


def _grey_folder(root: Path, size: int) -> Path:
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (size, size), 40 * i + 20).save(root / c / f"{i}.png")
    return root


def test_transform_settings_given_replace_the_guesses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: a grey model trained on unnormalised inputs got ImageNet's mean/std from --model
    resnet18, and init had no option for it (the audit read chance until the lines were deleted by hand)."""
    make_image_folder(tmp_path / "rgb", n_per_class=2, size=28)
    out = tmp_path / "s.yaml"
    argv = ["init", "--data", str(tmp_path / "rgb"), "--model", "resnet18", "-o", str(out), "--no-check"]
    res = run_main(
        [*argv, "--transform", "mean=none", "--transform", "std=none", "--transform", "resize=32"], capsys
    )
    assert res.code == 0, res.output
    t = load_config(out, check_files=False).data.transform
    assert t.mean is None and t.std is None and t.resize == 32
    assert "CHECK mean/std" not in res.output
    for arg, says in (
        ("colour=1", "not a data.transform key"),
        ("resize=-3", "resize"),
        ("mean", "KEY=VALUE"),
    ):
        assert_clean_failure(run_main([*argv, "--force", "--transform", arg], capsys), 2, says)


def test_a_resize_given_brings_the_guessed_crop_down_to_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: ``--model fastvit_t8 --transform resize=64`` kept the architecture's centre crop 256,
    so every image was resized to 64 and padded with zeros to 256, without a word (its CHECK note was dropped
    as answered)."""
    make_image_folder(tmp_path / "rgb", n_per_class=2, size=80)
    out = tmp_path / "c.yaml"
    argv = ["init", "--data", str(tmp_path / "rgb"), "--model", "resnet18", "-o", str(out), "--no-check"]
    res = run_main([*argv, "--transform", "resize=64"], capsys)
    assert res.code == 0, res.output
    t = load_config(out, check_files=False).data.transform
    assert t.resize == 64 and t.center_crop == 64
    assert "CHECK center_crop: 64, your resize (the architecture's crop 224" in res.output
    res = run_main([*argv, "--force", "--transform", "resize=64", "--transform", "center_crop=56"], capsys)
    assert load_config(out, check_files=False).data.transform.center_crop == 56
    assert "CHECK center_crop" not in res.output


def test_model_args_that_change_the_input_change_the_transform(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1-channel timm model gets grey inputs with one mean; a ViT built for 32 pixels gets 32-pixel ones;
    each written config passes its own one-batch check."""
    pytest.importorskip("timm")
    grey = str(_grey_folder(tmp_path / "grey", 32))
    out = tmp_path / "g.yaml"
    res = run_main(
        ["init", "--data", grey, "--model", "resnet10t", "--model-arg", "in_chans=1", "-o", str(out)], capsys
    )
    assert res.code == 0, res.output
    t = load_config(out).data.transform
    assert t.channels == 1 and not t.grayscale_to_rgb and t.mean is not None and len(t.mean) == 1
    make_image_folder(tmp_path / "rgb", n_per_class=2, size=28)
    out = tmp_path / "v.yaml"
    argv = ["init", "--data", str(tmp_path / "rgb"), "--model", "vit_tiny_patch16_224", "-o", str(out)]
    res = run_main([*argv, "--model-arg", "img_size=32", "--model-arg", "patch_size=8"], capsys)
    assert res.code == 0, res.output
    t = load_config(out).data.transform
    assert t.resize == 32 and t.center_crop == 32
    assert "CHECK lrp.composite" in out.read_text() and "AttnLRP" in out.read_text()  # a transformer
    for arg, says in (
        ("in_chans=2", "give 1 or 3"),
        ("img_size=[32,48]", "square"),
        ("img_size=[32", "YAML"),
    ):
        bad = run_main([*argv, "--force", "--model-arg", arg], capsys)
        assert_clean_failure(bad, 2, says)


def test_only_a_timm_architecture_with_attention_gets_the_transformer_note() -> None:
    """An outside check: RepViT and FastViT-T8 (convolutional) were told that EpsilonPlusFlat explains a
    transformer at patch resolution, for the "vit" in their names."""
    pytest.importorskip("timm")
    from spray.model_facts import inspect_model
    from spray.scaffold import _composite_notes

    for name, transformer in (("repvit_m0_9", False), ("fastvit_t8", False), ("vit_tiny_patch16_224", True)):
        facts = inspect_model(f"timm:{name}", 3, Path("."))
        assert facts.attention is transformer
        assert any("explains a transformer" in n for n in _composite_notes(facts)) is transformer


def test_timm_architecture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("timm")
    make_image_folder(tmp_path / "train", n_per_class=2, size=64)
    out = tmp_path / "t.yaml"
    res = run_main(
        ["init", "--data", str(tmp_path / "train"), "--model", "resnet10t", "-o", str(out)], capsys
    )
    assert res.code == 0, res.output
    cfg = load_config(out)
    assert cfg.model.factory == "timm:create_model" and cfg.model.factory_kwargs["model_name"] == "resnet10t"
    assert cfg.model.factory_kwargs["pretrained"] is False and "ok: model: 2 outputs" in res.stdout
    assert cfg.lrp.composite == "EpsilonPlusFlat"


def test_a_transformer_from_the_users_factory_gets_the_composite_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: a timm ViT built by the user's own factory got no word on the composite (the note
    matched architecture names only), and the audit with EpsilonPlusFlat missed its shortcut; AttnLRP found it."""
    pytest.importorskip("timm")
    make_image_folder(tmp_path / "train", n_per_class=2, size=16)
    out = tmp_path / "v.yaml"
    res = _init_factory_vit(tmp_path, out, capsys)
    assert res.code == 0, res.stderr
    assert (
        "CHECK lrp.composite: EpsilonPlusFlat explained that batch, and the model has attention" in res.stdout
    )
    # the advice the config's note gives a transformer named by its architecture (an outside check: a DeiT got
    # "Set AttnLRP" from a factory and "neither was better" by name)
    assert "Neither was better on every ViT tried" in res.stdout and "z+ convolutions" not in res.stdout


@pytest.mark.slow
def test_timm_name_that_torchvision_has_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """convnext_tiny is both: a plain name is torchvision's, timm:convnext_tiny is timm's."""
    pytest.importorskip("timm")
    make_image_folder(tmp_path / "train", n_per_class=2, size=32)
    out = tmp_path / "t.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "-o", str(out), "--no-check"]
    assert run_main([*argv, "--model", "timm:convnext_tiny"], capsys).code == 0
    cfg = load_config(out)
    assert (
        cfg.model.factory == "timm:create_model" and cfg.model.factory_kwargs["model_name"] == "convnext_tiny"
    )
    # z+ gives a ConvNeXt nearly flat heatmaps (docs/lrp.md): init writes the box rule and says why
    assert cfg.lrp.composite == "EpsilonGammaBox" and "nearly flat heatmaps" in out.read_text()
    res = run_main([*argv, "--force", "--model", "timm:convnext_tinny"], capsys)
    assert_clean_failure(res, 2, "not a timm architecture", "'convnext_tiny'")


def test_a_checkpoint_with_another_class_count_names_the_class_folders_and_can_be_retried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in an outside check: the hint "set model.num_classes to 5" led to a second error (the data has 2
    class folders); the failed config blocked the rerun without --force."""
    import torch

    from spray.lab.cnn import small_cnn

    make_image_folder(tmp_path / "train", n_per_class=2, size=28)
    torch.save(small_cnn(in_channels=3, num_classes=5).state_dict(), tmp_path / "five.pt")
    torch.save(small_cnn(in_channels=3, num_classes=2).state_dict(), tmp_path / "two.pt")
    out = tmp_path / "spray.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "spray.lab.cnn:small_cnn", "-o", str(out)]
    res = run_main([*argv, "--checkpoint", str(tmp_path / "five.pt")], capsys)
    assert_clean_failure(
        res,
        1,
        "5 outputs",
        "2 class folders (cat, dog)",
        "add the missing class folders",
        "kept, marked as failed",
    )
    assert "set model.num_classes" not in res.output
    assert out.read_text().startswith("# spray init: the check of this config FAILED")
    res = run_main([*argv, "--checkpoint", str(tmp_path / "two.pt")], capsys)  # no --force needed
    assert res.code == 0, res.output
    assert "FAILED" not in out.read_text() and load_config(out).model.checkpoint == tmp_path / "two.pt"
    assert_clean_failure(run_main([*argv, "--checkpoint", str(tmp_path / "two.pt")], capsys), 2, "--force")
    # a head not sized from the folders (--num-classes): the folders are not what to fix
    res = run_main([*argv, "--force", "--num-classes", "5", "--checkpoint", str(tmp_path / "two.pt")], capsys)
    assert_clean_failure(res, 1, "2 outputs, the model's 5")
    assert "class folders" not in res.output


def test_a_file_that_is_not_idx_is_not_called_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.csv").write_text("hello\n")
    (tmp_path / "images.zip").write_bytes(b"PK\x03\x04" + bytes(40))
    (tmp_path / "broken.gz").write_bytes(
        b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 30
    )  # damaged deflate data
    cases = (
        ("notes.csv", "not an IDX images file"),
        ("images.zip", "Unpack it into root/<class>"),
        ("broken.gz", "not an IDX images file"),
    )
    for name, why in cases:
        res = run_main(["init", "--data", str(tmp_path / name), "-o", str(tmp_path / "c.yaml")], capsys)
        assert_clean_failure(res, 2, name, why)
        assert "--labels" not in res.output


@pytest.mark.slow
def test_a_timm_checkpoint_under_a_name_torchvision_has_too_builds_timms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """efficientnet_b0 is both: a state dict of timm's gets timm's architecture (with a note), and the audit's
    key mismatch under torchvision's names the fix."""
    timm = pytest.importorskip("timm")
    import torch

    make_image_folder(tmp_path / "train", n_per_class=2, size=32)
    torch.save(timm.create_model("efficientnet_b0", num_classes=2).state_dict(), tmp_path / "eff.pt")
    out = tmp_path / "spray.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "efficientnet_b0", "-o", str(out)]
    res = run_main([*argv, "--checkpoint", str(tmp_path / "eff.pt")], capsys)
    assert res.code == 0, res.output
    cfg = load_config(out)
    assert (
        cfg.model.factory == "timm:create_model"
        and cfg.model.factory_kwargs["model_name"] == "efficientnet_b0"
    )
    assert "the checkpoint's keys are timm's" in res.output
    raw = yaml.safe_load(out.read_text())
    raw["model"] = {"architecture": "efficientnet_b0", "num_classes": 2, "checkpoint": "eff.pt"}
    out.write_text(yaml.safe_dump(raw))
    res = run_main(["audit", "--config", str(out), "-q"], capsys)
    assert_clean_failure(res, 1, "keys are those of timm's 'efficientnet_b0'", "timm:efficientnet_b0")
    # timm's ResNet has torchvision's key names: a torchvision checkpoint stays torchvision's
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), tmp_path / "r18.pt")
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "resnet18", "-o", str(out), "--force"]
    res = run_main([*argv, "--checkpoint", str(tmp_path / "r18.pt")], capsys)
    assert res.code == 0, res.output
    assert load_config(out).model.architecture == "resnet18" and "keys are timm's" not in res.output


@pytest.mark.parametrize("kind", ["png16", "pgm16", "float_tiff"])
def test_sixteen_bit_images_are_pointed_out(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """torchvision's ImageFolder clips a 16-bit PNG at 255; spray scales it: init says so before any audit.
    An outside check found 16-bit PGM and float TIFF files (read as Pillow's modes I and F) not pointed out."""
    root = tmp_path / "train"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            if kind == "float_tiff":
                Image.fromarray(np.full((16, 16), 0.3 * (i + 1), np.float32)).save(root / c / f"{i}.tif")
            else:
                ext = "png" if kind == "png16" else "pgm"
                Image.fromarray(np.full((16, 16), 1000 * (i + 1), np.uint16)).save(root / c / f"{i}.{ext}")
    out = tmp_path / "a.yaml"
    res = run_main(["init", "--data", str(root), "-o", str(out)], capsys)
    assert res.code == 0, res.output
    assert "4 of 4 probed files are 16-bit grey images" in res.output + out.read_text()


def test_a_config_without_a_normalisation_gets_a_commented_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: with a factory model spray cannot guess mean/std, and the config had no place to put
    them; a commented template stands where they go, and the file still loads."""
    root = tmp_path / "train"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), (40 * i, 0, 0)).save(root / c / f"{i}.png")
    out = tmp_path / "a.yaml"
    assert run_main(["init", "--data", str(root), "-o", str(out)], capsys).code == 0
    text = out.read_text()
    assert "  # transform: {mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}    # CHECK: your training's" in text
    assert "transform" not in yaml.safe_load(text)["data"]  # a comment only
    # beside a transform spray did write (images of two sizes: resize and crop), the template goes inside it
    Image.new("RGB", (50, 50)).save(root / "a" / "big.png")
    assert run_main(["init", "--data", str(root), "-o", str(out), "--force"], capsys).code == 0
    text = out.read_text()
    assert "    # mean: [0.5, 0.5, 0.5]    # CHECK: your training's normalisation" in text
    assert "    # std: [0.5, 0.5, 0.5]" in text
    t = yaml.safe_load(text)["data"]["transform"]
    assert "resize" in t and "mean" not in t


def test_the_stray_sizes_note_only_where_no_crop_brings_them_to_one_size() -> None:
    """A review: 95 landscape and 5 portrait photos for a 224 model got resize/center_crop and, beside it, the
    note that the audit skips the portrait ones, which the crop makes 224×224 like the rest."""
    from spray.data_facts import DataFacts
    from spray.model_facts import ModelFacts
    from spray.scaffold import _transform

    m = ModelFacts({}, "torchvision", 224, [0.5] * 3, [0.25] * 3, 0.875, [], False, 3)
    t, notes = _transform(DataFacts({}, 100, ["a"], [(480, 640)] * 95 + [(640, 480)] * 5), m)
    assert t["center_crop"] == 224 and not any("skips images of another size" in n for n in notes)
    t, notes = _transform(DataFacts({}, 100, ["a"], [(32, 32)] * 95 + [(48, 48)] * 5), m)
    assert "center_crop" not in t and any("5 of 100 images probed are not 32×32" in n for n in notes)


@pytest.mark.parametrize("sizes", [(20,), (20, 24)])
def test_a_factory_transformer_gets_the_input_size_it_states(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sizes: tuple[int, ...]
) -> None:
    """An outside check: a ViT from the user's factory built for 16-pixel inputs got images resized for 224
    (mixed sizes) or none (one other size) and init's check failed on its size; its patch embedding says 16."""
    pytest.importorskip("timm")
    for i, size in enumerate(sizes):
        make_image_folder(tmp_path / "train", n_per_class=2 + i, size=size)
    out = tmp_path / "v.yaml"
    res = _init_factory_vit(tmp_path, out, capsys)
    assert res.code == 0, res.stdout + res.stderr
    assert "CHECK: the model runs only at 16×16 inputs (it says so itself)" in res.stdout
    assert (
        load_config(out).data.transform.center_crop == 16
        and "ok: one batch read: inputs (3, 16, 16)" in res.stdout
    )


def test_a_fixed_input_side_is_read_from_the_built_model() -> None:
    torchvision = pytest.importorskip("torchvision")
    timm = pytest.importorskip("timm")
    from spray.model_facts import fixed_input_side

    assert fixed_input_side(torchvision.models.vit_b_16(num_classes=2, image_size=32)) == 32
    assert fixed_input_side(timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=2)) == 32
    assert (
        fixed_input_side(timm.create_model("vit_tiny_patch16_224", dynamic_img_size=True, num_classes=2))
        is None
    )
    assert fixed_input_side(timm.create_model("resnet10t", num_classes=2)) is None
    assert fixed_input_side(torchvision.models.resnet18(num_classes=2)) is None


def test_a_convnext_from_the_users_factory_gets_the_composite_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: init writes EpsilonGammaBox for a ConvNeXt by name (EpsilonPlusFlat's maps of it are
    nearly flat), but the same ConvNeXt built by the user's factory got EpsilonPlusFlat without a word."""
    pytest.importorskip("timm")
    make_image_folder(tmp_path / "train", n_per_class=2, size=32)
    (tmp_path / "mynet.py").write_text(
        "import timm\n\n\ndef make(num_classes=2):\n"
        "    return timm.create_model('convnext_atto', num_classes=num_classes)\n"
    )
    out = tmp_path / "c.yaml"
    res = run_main(
        ["init", "--data", str(tmp_path / "train"), "--model", "mynet:make", "-o", str(out)], capsys
    )
    assert res.code == 0, res.stdout + res.stderr
    assert (
        "CHECK lrp.composite: EpsilonPlusFlat explained that batch, but the model has ConvNeXt blocks"
        in res.stdout
    )


@pytest.mark.parametrize(
    ("model", "resize", "interpolation"),
    [("efficientnet_b0", 256, "bicubic"), ("swin_t", 232, "bicubic"), ("timm:resnet10t", 201, "bicubic")],
)
def test_the_architectures_evaluation_transform_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, resize: int, interpolation: str
) -> None:
    """An outside check: init wrote round(side / crop_pct), 1 pixel over timm's floor (236 for 235), and
    bilinear for architectures evaluated bicubic (timm's; torchvision's EfficientNet and Swin weights), the
    pixels the model was trained on then 3.0 normalised units apart at most. torchvision's weights'
    transforms() and timm's pretrained_cfg say both (metadata only: nothing is downloaded)."""
    if model.startswith("timm:"):
        pytest.importorskip("timm")
    make_image_folder(tmp_path / "train", n_per_class=2, size=40)
    make_image_folder(tmp_path / "train", n_per_class=1, classes=("cat",), size=50)  # sizes vary: resize/crop
    out = tmp_path / "spray.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", model, "-o", str(out), "--no-check"]
    assert run_main(argv, capsys).code == 0
    t = load_config(out).data.transform
    assert (t.resize, t.interpolation) == (resize, interpolation)
    assert "CHECK resize/center_crop/interpolation" in out.read_text()


def test_a_fixed_size_architecture_on_small_images_gets_its_interpolation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: on images of at most 64 px a fixed-size architecture evaluated bicubic (MaxViT) got
    no interpolation (so bilinear), and the note hid that non-square images lose part of their longer side."""
    make_image_folder(tmp_path / "train", n_per_class=2, size=40)
    for f in (tmp_path / "train").rglob("*.png"):
        Image.open(f).crop((0, 0, 40, 24)).save(f)  # 24×40: not square
    out = tmp_path / "spray.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "maxvit_t", "-o", str(out), "--no-check"]
    assert run_main(argv, capsys).code == 0
    t = load_config(out).data.transform
    assert (t.resize, t.center_crop, t.interpolation) == (224, 224, "bicubic")
    assert "the centre crop cuts the longer side to 224" in out.read_text()


def _init_factory_vit(tmp_path: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """``spray init`` of tmp_path/train with a timm ViT for 16-pixel inputs from the user's own factory."""
    (tmp_path / "myvit.py").write_text(
        "import timm\n\n\ndef make(num_classes=2):\n"
        "    return timm.create_model('vit_tiny_patch16_224', img_size=16, patch_size=4, depth=1, "
        "num_classes=num_classes)\n"
    )
    return run_main(
        ["init", "--data", str(tmp_path / "train"), "--model", "myvit:make", "-o", str(out)], capsys
    )


def test_a_checkpoint_holding_a_model_and_its_ema_is_named_by_checkpoint_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check of the refusal of two networks in one checkpoint: Lightning's model. beside ema_model. now
    needed a hand edit, spray init having no option for it."""
    import torch

    from spray.lab.cnn import small_cnn

    make_image_folder(tmp_path / "train", n_per_class=2, size=28)
    torch.manual_seed(0)
    net, ema = small_cnn(in_channels=3, num_classes=2), small_cnn(in_channels=3, num_classes=2)
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    state |= {f"ema_model.{k}": v for k, v in ema.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "last.ckpt")
    out = tmp_path / "spray.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "spray.lab.cnn:small_cnn", "-o", str(out)]
    argv += ["--checkpoint", str(tmp_path / "last.ckpt")]
    assert_clean_failure(run_main(argv, capsys), 1, "holds 2 networks", "'ema_model.', 'model.'")
    res = run_main([*argv, "--checkpoint-key", "ema_model.", "--force"], capsys)
    assert res.code == 0, res.output
    assert load_config(out).model.checkpoint_key == "ema_model."
    no_file = [
        "init",
        "--data",
        str(tmp_path / "train"),
        "--checkpoint-key",
        "x",
        "-o",
        str(tmp_path / "b.yaml"),
    ]
    assert_clean_failure(run_main(no_file, capsys), 2, "--checkpoint-key needs --checkpoint")


def test_the_googlenet_note_is_left_out_once_mean_and_std_are_given(tmp_path: Path) -> None:
    """An outside check: the transform_input CHECK line still asked for mean and std 0.5 after --transform gave them."""
    from spray.scaffold import scaffold_config

    make_image_folder(tmp_path / "train", n_per_class=2, size=28)
    notes = scaffold_config(str(tmp_path / "train"), "googlenet", tmp_path / "a.yaml")
    assert any("transform_input=True" in n for n in notes)
    given = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    notes = scaffold_config(str(tmp_path / "train"), "googlenet", tmp_path / "b.yaml", transform_args=given)
    assert not any("transform_input=True" in n for n in notes)
