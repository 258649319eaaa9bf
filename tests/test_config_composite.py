"""lrp.composite_kwargs is checked when the config loads: parameters the composite does not take are named
with the ones it does, and values out of range (a non-positive epsilon made maps carry 125 % of the logit)
are refused with the accepted range."""

import inspect
from pathlib import Path

import pytest

from spray.config import config_from_dict
from spray.errors import ConfigError
from spray.lrp.composites import COMPOSITES
from tests.helpers import minimal_config


def test_the_table_is_the_builders_signatures() -> None:
    from spray.config.lrp import COMPOSITE_PARAMETERS

    assert set(COMPOSITE_PARAMETERS) == set(COMPOSITES)
    for name, build in COMPOSITES.items():
        assert COMPOSITE_PARAMETERS[name] == tuple(inspect.signature(build).parameters), name


@pytest.mark.parametrize(
    ("composite", "kwargs", "said"),
    [
        ("EpsilonPlusFlat", {"epsilon": -1.0}, r"epsilon must be a positive number .*got -1\.0"),
        ("EpsilonPlusFlat", {"epsilon": 0.0}, r"epsilon must be a positive number"),
        ("AttnLRP", {"stabilizer": -1e-6}, r"stabilizer must be a positive number"),
        ("EpsilonGammaBox", {"gamma": -0.5}, r"gamma must be 0 or more"),
        ("EpsilonGammaBox", {"low": 2.0}, r"low \(2\.0\) must be below high \(1\.0\)"),
        (
            "EpsilonPlusFlat",
            {"gamma": 0.25},
            r"EpsilonPlusFlat takes no parameter 'gamma'; its parameters are epsilon, stabilizer",
        ),
        ("epsilon_plus_flat", {"gama": 0.25}, r"takes no parameter 'gama'"),
    ],
)
def test_bad_composite_parameters_are_refused(
    tmp_path: Path, composite: str, kwargs: dict, said: str
) -> None:
    raw = minimal_config(tmp_path)
    raw["lrp"] = {"composite": composite, "composite_kwargs": kwargs}
    with pytest.raises(ConfigError, match=said):
        config_from_dict(raw, base_dir=tmp_path)


def test_good_parameters_load(tmp_path: Path) -> None:
    raw = minimal_config(tmp_path)
    kw = {"epsilon": 1e-3, "gamma": 0.0, "low": -2.1, "high": 2.6, "stabilizer": 1e-6}
    raw["lrp"] = {"composite": "EpsilonGammaBox", "composite_kwargs": kw}
    # the stabilizer is at its default: dropped, the same heatmaps as leaving it out
    assert config_from_dict(raw, base_dir=tmp_path).lrp.composite_kwargs == {
        "epsilon": 1e-3,
        "gamma": 0.0,
        "low": -2.1,
        "high": 2.6,
    }


def test_the_defaults_table_is_the_builders_defaults() -> None:
    from spray.config.lrp import COMPOSITE_DEFAULTS

    for name, build in COMPOSITES.items():
        for p in inspect.signature(build).parameters.values():
            if p.name in COMPOSITE_DEFAULTS:
                assert p.default == COMPOSITE_DEFAULTS[p.name], (name, p.name)


@pytest.mark.parametrize("spelling", ["epsilon_gamma_box", "epsilongammabox", "EPSILON_GAMMA_BOX"])
def test_a_composite_spelled_otherwise_is_the_same_audit(tmp_path: Path, spelling: str) -> None:
    """An outside check: ``epsilon_gamma_box`` (zennit's key, accepted) left the ZBox at [0, 1] for ImageNet-normalised
    inputs (the transform's range was set only for a name holding "Box") and named another cache directory than
    ``EpsilonGammaBox``; a parameter written out at its default did the same."""
    from spray.correct.relevance import composite_kwargs
    from spray.runs.identity import lrp_hash

    raw = minimal_config(tmp_path)
    raw["lrp"] = {"composite": spelling, "composite_kwargs": {"epsilon": 1e-6, "gamma": 0.25}}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    raw["lrp"] = {"composite": "EpsilonGammaBox"}
    same = config_from_dict(raw, base_dir=tmp_path)
    assert cfg.lrp.composite == "EpsilonGammaBox"
    assert composite_kwargs(cfg.lrp, (-2.1, 2.6)) == {"low": -2.1, "high": 2.6}
    assert lrp_hash(cfg) == lrp_hash(same)
    assert cfg.section_hash("lrp") == same.section_hash("lrp")
