"""correction.artifact_class (--class) naming no class of the dataset is a config error (exit 2), not a
failure (exit 1)."""

from __future__ import annotations

import numpy as np
import pytest

from spray.config import config_from_dict
from spray.config.correction import CorrectionConfig
from spray.correct.groups import artifact_group, read_flags
from spray.correct.samples import SampleSet
from spray.errors import ConfigError
from tests.test_correct_world import DATASET, World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("values"))


@pytest.fixture(scope="module")
def samples(world: World) -> SampleSet:
    import yaml

    cfg = config_from_dict(yaml.safe_load(world.config.read_text()), base_dir=world.root)
    return SampleSet.build(cfg.data)


def test_an_artifact_class_of_no_class_is_a_config_error(world: World, samples: SampleSet) -> None:
    flags = read_flags(world.flags_db, DATASET, CorrectionConfig())
    with pytest.raises(ConfigError, match=r"artifact_class \(--class\) 99: there is no such class"):
        artifact_group(samples, flags, CorrectionConfig(artifact_class=99), 0, np.zeros(0, np.int64))
