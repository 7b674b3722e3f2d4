"""train.compile: the compiled training step trains as the eager one does."""

import pytest

from seqlab.config import RunConfig
from seqlab.errors import ConfigError
from seqlab.train.checkpoint import CheckpointManager
from seqlab.train.trainer import Trainer


def config(corpus, mixer, **train):
    return RunConfig.from_dict({
        "seed": 1,
        "model": {"mixer": mixer, "d_model": 32, "n_layers": 2 if isinstance(mixer, list) else 1,
                  "n_heads": 4, "context_length": 16,
                  "dropout": 0.0, "position": "rope"},
        "data": {"path": str(corpus)},
        "train": {"steps": 4, "batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "eval_every": 4,
                  "eval_batches": 1, "progress": False, "num_threads": 1, **train}})


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return path


def weights(run):
    return CheckpointManager(run / "trainer").load_latest().model


@pytest.mark.parametrize("backend, mixer, tolerance", [
    ("aot_eager", ["attention", "lstm"], 0.0),  # graph capture alone changes nothing (LSTM runs eagerly between graphs)
    # generated kernels round differently; one layer, as inductor's C++ build dominates
    pytest.param("inductor", "attention", 1e-4, marks=pytest.mark.slow),
])
def test_compiled_training_equals_eager_training(corpus, tmp_path, backend, mixer, tolerance):
    eager = Trainer(config(corpus, mixer), tmp_path / "eager").fit()
    compiled = Trainer(config(corpus, mixer, compile=True, compile_backend=backend),
                       tmp_path / "compiled").fit()
    assert compiled.metrics["val_loss"] == pytest.approx(eager.metrics["val_loss"], rel=1e-5)
    a, b = weights(tmp_path / "eager"), weights(tmp_path / "compiled")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= tolerance, worst


def test_an_unknown_backend_is_refused(corpus):
    with pytest.raises(ConfigError, match="train.compile_backend must be inductor, aot_eager or eager"):
        config(corpus, "attention", compile=True, compile_backend="tensorrt")
