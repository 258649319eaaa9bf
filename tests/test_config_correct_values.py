"""Bad correction values (--class of no class, --source-run of no run) are config errors (exit 2), not
failures (exit 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spray.config import config_from_dict
from spray.config.correction import CorrectionConfig
from spray.correct.groups import artifact_group, read_flags
from spray.correct.samples import SampleSet
from spray.correct.source import find_source_run
from spray.errors import ConfigError
from tests.test_correct_world import DATASET, TARGET, World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("values"))


@pytest.fixture(scope="module")
def samples(world: World) -> SampleSet:
    import yaml

    cfg = config_from_dict(yaml.safe_load(world.config.read_text()), base_dir=world.root)
    return SampleSet.build(cfg.data)


@pytest.mark.parametrize(
    ("cls", "said"), [(99, r"99: there is no such class"), (None, r"holds none of the flagged")]
)
def test_an_artifact_class_of_no_class_or_no_flags_is_a_config_error(
    world: World, samples: SampleSet, cls: int | None, said: str
) -> None:
    flags = read_flags(world.flags_db, DATASET, CorrectionConfig())
    other = (TARGET + 1) % len(samples.class_names) if cls is None else cls  # the world flags TARGET only
    with pytest.raises(ConfigError, match=said):
        artifact_group(samples, flags, CorrectionConfig(artifact_class=other), 0, np.zeros(0, np.int64))


def test_a_source_run_that_names_no_run_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"correction\.source_run: no published run 'nope'"):
        find_source_run(tmp_path, "data", "hash", "nope")
