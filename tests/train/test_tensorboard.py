"""``train.tensorboard``: metrics.jsonl's numbers as TensorBoard scalars, exact across a
resume that rewinds past logged steps."""

import json
import shutil

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from seqlab.config import RunConfig  # noqa: E402
from seqlab.train.checkpoint import CheckpointManager  # noqa: E402
from seqlab.train.trainer import Trainer  # noqa: E402


@pytest.fixture
def config(tmp_path):
    rows = [{"text": ("ab" if i % 2 else "cd") * (1 + i % 5), "label": str(i % 2)} for i in range(40)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return RunConfig.from_dict({
        "task": "classify", "seed": 0,
        "model": {"mixer": "gru", "position": "none", "d_model": 16, "n_layers": 1,
                  "context_length": 16},
        "data": {"source": "examples", "path": str(tmp_path / "train.jsonl")},
        "train": {"steps": 6, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "eval_every": 3,
                  "save_every": 2, "log_every": 1, "progress": False, "num_threads": 1,
                  "tensorboard": True}})


def scalars(run) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def logged(run) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key != "step":
                out.setdefault(key, []).append((record["step"], value))
    return out


def assert_same(run):
    tb, log = scalars(run), logged(run)
    assert set(tb) == set(log) >= {"loss", "lr", "val_loss", "accuracy", "macro_f1"}
    for tag, points in log.items():
        assert [s for s, _ in tb[tag]] == [s for s, _ in points], tag  # each step once
        assert [v for _, v in tb[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_every_logged_number_is_a_scalar(config, tmp_path):
    Trainer(config, tmp_path / "run").fit()
    assert_same(tmp_path / "run")


def test_a_resume_that_rewinds_hides_the_steps_logged_after_the_checkpoint(config, tmp_path):
    run = tmp_path / "run"
    Trainer(config, run).fit(until_step=5)  # logs steps 1-5, checkpoints at 4 and 5
    shutil.rmtree(run / "trainer" / "step-00000005")  # as if it crashed before saving 5
    assert CheckpointManager(run / "trainer").latest_step() == 4
    Trainer(config, run, resume=True).fit()  # step 5 again (its events from before are hidden), then 6
    assert_same(run)


def test_the_option_without_the_package_is_a_config_error(config, tmp_path, monkeypatch):
    import sys

    from seqlab.errors import ConfigError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        Trainer(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
