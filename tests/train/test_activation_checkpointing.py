"""``train.activation_checkpointing``: blocks recompute their activations in backward,
and training follows the very same path as without it."""

import pytest
import torch

from seqlab.config import RunConfig
from seqlab.train.trainer import Trainer


def config(tmp_path, mixer, checkpointing):
    (tmp_path / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    return RunConfig.from_dict({
        "seed": 0,
        "model": {"mixer": mixer, "d_model": 32, "n_layers": 2, "n_heads": 4,
                  "context_length": 16, "dropout": 0.1,  # recomputation must redraw the same masks
                  "position": "rope" if mixer == "attention" else "none"},
        "data": {"path": str(tmp_path / "text.txt")},
        "train": {"steps": 3, "batch_size": 4, "lr": 1e-2, "warmup_steps": 1, "eval_every": 3,
                  "progress": False, "num_threads": 1,
                  "activation_checkpointing": checkpointing}})


@pytest.mark.parametrize("mixer", ["attention", "lstm", "mamba"])
def test_checkpointed_training_equals_plain_training(tmp_path, mixer):
    weights, calls = {}, {}
    for checkpointing in (False, True):
        trainer = Trainer(config(tmp_path, mixer, checkpointing), tmp_path / f"run-{checkpointing}")
        trainer._setup()
        count = calls.setdefault(checkpointing, [0])
        trainer.model.backbone.blocks[0].register_forward_pre_hook(
            lambda *args, count=count: count.__setitem__(0, count[0] + 1))
        for _ in range(3):
            trainer._train_step()
            trainer.step += 1
        weights[checkpointing] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    assert calls[False] == [3] and calls[True] == [6]  # the block started again in each backward
    for name, plain in weights[False].items():
        torch.testing.assert_close(weights[True][name], plain, rtol=1e-5, atol=1e-6, msg=name)
