"""The configs of the long runs in ``benchmarks/configs`` stay valid and train."""

from pathlib import Path

import pytest

from seqlab.config import RunConfig
from seqlab.train.trainer import Trainer

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "configs").glob("*.yaml"))


def test_the_long_run_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"selective_copy_mamba", "induction_attention",
                                         "induction_mamba"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_trains_two_steps(path, tmp_path):
    config = RunConfig.from_yaml(path, ["train.steps=2", "train.batch_size=2",
                                        "train.eval_every=2", "task_options.eval_examples=2"])
    result = Trainer(config, tmp_path / "run").fit()
    assert result.step == 2 and 0.0 <= result.metrics["accuracy"] <= 1.0
