"""The held-out data a correction is evaluated on (``correction.test_data``), read as the audited data is.

Held-out data must mean what the audited data means: the same classes under the same label indices, the
same input size, the same normalisation. Each of these went wrong without a word (an outside check): a
test folder without one class folder re-indexed every later class, a test transform that set one option
dropped the audited mean and std, and test images of another size ended in a raw matrix-shape error.
"""

from __future__ import annotations

from pydantic import ValidationError

from spray.config import AuditConfig
from spray.config.data import DataConfig
from spray.correct.samples import SampleSet
from spray.errors import ConfigError


def held_out_config(cfg: AuditConfig) -> DataConfig:
    """``correction.test_data`` with what it leaves unset taken from ``data``: each transform field it does not
    set, and for data without class folders the class names (a rename of the audited labels applies to the
    held-out labels too).

    Parameters
    ----------
    cfg : AuditConfig
        The audit config with ``correction.test_data`` set.

    Returns
    -------
    DataConfig

    Raises
    ------
    ConfigError
        ``correction.test_data`` is not set, or its completed transform is invalid.
    """
    test = cfg.correction.test_data
    if test is None:
        raise ConfigError("correction.test_data is not set")
    update: dict[str, object] = {}
    own = test.transform.model_fields_set if "transform" in test.model_fields_set else set()
    # field by field: a test transform that sets colour_to_grey must not drop the audited mean and std
    fields = {**cfg.data.transform.model_dump(), **{k: getattr(test.transform, k) for k in own}}
    try:
        update["transform"] = type(cfg.data.transform)(**fields)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(
            f"correction.test_data.transform, completed with data.transform's other fields, is invalid "
            f"({problems}): set the conflicting fields in correction.test_data.transform too."
        ) from None
    # an image folder's names are its folders' (a rename of the audited folders need not fit it)
    if test.class_names is None and test.kind != "image_folder" and cfg.data.class_names is not None:
        update["class_names"] = list(cfg.data.class_names)
    return test.model_copy(update=update)


def check_held_out(
    test: SampleSet, audited: SampleSet, test_input: tuple[int, ...], input: tuple[int, ...]
) -> None:
    """Refuse held-out data whose classes or input size differ from the audited data's.

    Parameters
    ----------
    test, audited : SampleSet
        The held-out and the audited data.
    test_input, input : tuple of int
        ``(C, H, W)`` of a model input of each.

    Raises
    ------
    ConfigError
        Label i names another class than the audited label i (a class folder missing before others, other
        names or another order, more classes), or another input shape.
    """
    mine, theirs = list(test.class_names), list(audited.class_names)
    # fewer classes are fine when label i still names class i (IDX labels, a last folder without images)
    if mine != theirs[: len(mine)]:
        missing = [c for c in theirs if c not in mine]
        extra = [c for c in mine if c not in theirs]
        what = (
            (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"not audited {extra}" if extra else "")
        ) or "the same names in another order"
        raise ConfigError(
            f"correction.test_data has other classes than the audited data ({what}): its label i would name "
            f"another class than the model's output i, and every evaluation figure would be wrong. Audited: "
            f"{theirs}; test_data: {mine}. Give test_data the same class folders (an empty folder for a class "
            "without test images) or the same correction.test_data.class_names."
        )
    if tuple(test_input) != tuple(input):
        raise ConfigError(
            f"correction.test_data's images reach the model as {tuple(test_input)} (channels, height, width), the "
            f"audited data's as {tuple(input)}. Set correction.test_data.transform (resize, center_crop, channels, "
            "colour_to_grey) so that they match."
        )


__all__ = ["check_held_out", "held_out_config"]
