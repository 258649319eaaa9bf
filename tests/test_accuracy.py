"""The model-accuracy check: near chance, and a class whose images are predicted as another class."""

from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np
import pytest

from spray.accuracy import model_accuracy

NAMES = ["circle", "cross", "square", "triangle"]


def test_a_trained_model_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.repeat([0, 1, 2], 20)
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        got = model_accuracy(labels, labels.copy(), NAMES)
    assert got is not None and got.accuracy == 1.0 and not got.near_chance and not got.shifted
    assert not caplog.records


def test_near_chance_warns(caplog: pytest.LogCaptureFixture) -> None:
    """Inputs unlike training, or untrained weights: the audit says so instead of looking clean."""
    labels = np.repeat([0, 1, 2], 20)
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        chance = model_accuracy(labels, np.zeros_like(labels), NAMES)  # always the first class: 33 %
    assert chance is not None and chance.near_chance and abs(chance.majority_share - 1 / 3) < 1e-12
    assert (
        "true label for only 33% of the 60 audited images" in caplog.text and "data.transform" in caplog.text
    )
    skewed = np.array([0] * 90 + [1] * 10)  # 90 % of one class: 90 % is what always answering it gives
    assert model_accuracy(skewed, np.zeros_like(skewed), NAMES).near_chance  # type: ignore[union-attr]
    assert not model_accuracy(skewed[:10], np.ones(10, int), NAMES).near_chance  # type: ignore[union-attr]
    assert model_accuracy(np.array([], int), np.array([], int), NAMES) is None


def test_data_where_one_class_holds_most_images_is_judged_per_class(caplog: pytest.LogCaptureFixture) -> None:
    """An outside check: 95 % of the images in one class, a model right on 83 % of them (and on most images of
    every class) was compared with "always answering the largest class gives 95 %" and called near chance; the
    same run flagged the planted shortcut it was said to be unable to show."""
    labels = np.array([0] * 950 + [1] * 25 + [2] * 25)
    good = labels.copy()
    good[:160] = 1  # 83 % right overall, below the 95 % of always answering class 0
    good[950:955] = 0
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        got = model_accuracy(labels, good, NAMES)
    assert (
        got is not None and got.accuracy < got.majority_share and not got.near_chance and not caplog.records
    )
    assert got.balanced_accuracy == pytest.approx((790 / 950 + 20 / 25 + 1) / 3)
    collapsed = np.zeros_like(labels)  # always the largest class: 95 % right, a third per class
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        bad = model_accuracy(labels, collapsed, NAMES)
    assert bad is not None and bad.near_chance
    assert "only 33% of a class's images, averaged over its 3 classes (guessing gives 33%" in caplog.text


def test_a_one_class_audit_is_judged_against_guessing(caplog: pytest.LogCaptureFixture) -> None:
    """An outside check: auditing one class (the other folders empty, as documented) compared a 98 %
    accurate model with "always answering the largest class gives 100 %" and warned that its inputs differ
    from training."""
    labels = np.full(50, 2)
    good = labels.copy()
    good[:1] = 0
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        got = model_accuracy(labels, good, NAMES)
    assert got is not None and got.accuracy == 0.98 and not got.near_chance and not caplog.records
    guessed = np.arange(50) % 4  # a quarter right: what guessing among the 4 classes gives
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        bad = model_accuracy(labels, guessed, NAMES)
    assert bad is not None and bad.near_chance
    assert "guessing among its 4 classes gives 25%" in caplog.text and "largest class" not in caplog.text


def test_swapped_class_folders_are_named(caplog: pytest.LogCaptureFixture) -> None:
    """Two folders swapped: accuracy 50 %, not near chance, but each swapped class is predicted as the other."""
    labels = np.repeat([0, 1, 2, 3], 20)
    predictions = labels.copy()
    predictions[labels == 0], predictions[labels == 1] = 1, 0
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        got = model_accuracy(labels, predictions, NAMES)
    assert got is not None and got.accuracy == 0.5 and not got.near_chance
    assert got.shifted == {"circle": "cross", "cross": "circle"}
    assert "(circle as cross, cross as circle)" in caplog.text and "not in the same order" in caplog.text
    # A class the model gets partly wrong, spread over several classes, is no shift.
    spread = labels.copy()
    spread[:8] = [1, 2, 3, 1, 2, 3, 1, 2]
    assert not model_accuracy(labels, spread, NAMES).shifted  # type: ignore[union-attr]


def test_a_model_that_answers_one_class_is_not_called_out_of_order(caplog: pytest.LogCaptureFixture) -> None:
    """Found in an outside check: every class predicted as one was blamed on the class order."""
    labels = np.repeat([0, 1, 2, 3], 20)
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        got = model_accuracy(labels, np.ones_like(labels), NAMES)
    assert got is not None and got.shifted == {"circle": "cross", "square": "cross", "triangle": "cross"}
    assert "answers cross for nearly everything" in caplog.text and "not in the same order" not in caplog.text
    # two fine-grained classes folded into a third by a good model: a class-order question, not a collapse
    many = np.repeat(np.arange(50), 20)
    folded = many.copy()
    folded[(many == 1) | (many == 2)] = 0
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        caplog.clear()
        good = model_accuracy(many, folded, [str(i) for i in range(50)])
    assert good is not None and good.accuracy == 0.96 and len(good.shifted) == 2
    assert "answers 0 for nearly everything" not in caplog.text and "not in the same order" in caplog.text


def test_a_class_the_model_does_not_answer_is_named() -> None:
    """An outside check: a corrected model gave 0 % of circle's images their label (37 % square, 36 %
    triangle, 27 % cross) at 60 % overall; no class took the majority of them, so nothing was said."""
    from spray.accuracy import model_accuracy, problems

    names = ["circle", "cross", "ring", "square", "triangle"]
    labels = np.repeat(np.arange(5), 100)
    predictions = labels.copy()
    predictions[:100] = np.repeat([1, 3, 4], [27, 37, 36])  # circle's images spread over three classes
    predictions[100:120] = 2  # some noise elsewhere
    acc = model_accuracy(labels, predictions, names)
    assert (
        acc is not None and not acc.near_chance and acc.shifted == {} and acc.unrecognised == {"circle": 0.0}
    )
    said = problems(asdict(acc))
    assert (
        len(said) == 1
        and "1 class(es) their own label for almost none of their images (circle (0 %)" in said[0]
    )
    # a class answered a little (10 %) is a weak class, not one given up
    predictions[:10] = 0
    assert model_accuracy(labels, predictions, names).unrecognised == {}  # type: ignore[union-attr]


def test_with_the_order_off_a_class_mostly_predicted_as_another_is_named_too() -> None:
    """An outside check: folders in alphabetical order swapped six Fashion-MNIST classes; the warning named five
    and left out Coat, 69 % predicted as Pullover and 12.6 % as Coat (under the 80 % a clear shift needs)."""
    labels = np.repeat([0, 1, 2, 3], 100)
    predictions = labels.copy()
    predictions[labels == 0] = 1  # circle: clearly shifted
    coat = np.flatnonzero(labels == 2)
    predictions[coat[:69]], predictions[coat[69:82]] = 3, 2  # 69 % as triangle, 13 % its own
    predictions[coat[82:]] = 0
    got = model_accuracy(labels, predictions, NAMES)
    assert got is not None and got.shifted == {"circle": "cross", "square": "triangle"}
    # without a clear shift, a class mostly predicted as another is a weak class, not an order problem
    alone = labels.copy()
    alone[coat[:69]], alone[coat[69:82]], alone[coat[82:]] = 3, 2, 0
    assert model_accuracy(labels, alone, NAMES).shifted == {}  # type: ignore[union-attr]


def test_a_corrected_models_log_blames_the_correction(caplog: pytest.LogCaptureFixture) -> None:
    """An outside check: a collapsed corrected model's re-audit logged "check data.transform" (its inputs are
    the source run's); its record and report said the correction collapsed it."""
    labels = np.repeat([0, 1, 2], 20)
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        model_accuracy(labels, np.zeros_like(labels), NAMES, corrected=True)
    assert "the correction itself did this" in caplog.text and "probably differ" not in caplog.text


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_a_model_ending_in_a_sigmoid_is_said(caplog: pytest.LogCaptureFixture) -> None:
    """An outside check: a model whose forward ends in torch.sigmoid passed without a word, its confidences a
    softmax of values in [0, 1] (0.345 ± 0.001 for three classes) and its outputs far below the paste and
    removal margins, which are in logit units."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    logits = rng.normal(0, 1, (60, 3)) + 6 * np.eye(3)[labels]  # a model right on every image
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        plain = model_accuracy(labels, logits.argmax(1), NAMES, probabilities=_softmax(logits))
    assert plain is not None and not plain.bounded_outputs and not caplog.records
    sigmoid = 1 / (1 + np.exp(-logits))
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        got = model_accuracy(labels, sigmoid.argmax(1), NAMES, probabilities=_softmax(sigmoid))
    assert got is not None and got.bounded_outputs and not got.near_chance
    assert "probably ends in a sigmoid" in caplog.text and "without its final sigmoid" in caplog.text
    # an untrained model's small outputs are near chance, said as such, not as a sigmoid
    caplog.clear()
    small = rng.normal(0, 0.05, (60, 3))
    with caplog.at_level(logging.WARNING, logger="spray.accuracy"):
        untrained = model_accuracy(labels, small.argmax(1), NAMES, probabilities=_softmax(small))
    assert untrained is not None and untrained.near_chance and not untrained.bounded_outputs
    assert "sigmoid" not in caplog.text
