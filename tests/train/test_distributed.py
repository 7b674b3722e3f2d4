"""Training on several ranks under torchrun (DDP on gloo, 2 CPU processes on loopback):
2 ranks equal 1 rank, elastic restart, preemption of one rank, a rank that dies, resume
with another world size, a process group that cannot form, and the batch sharding."""

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab.config import RunConfig
from seqlab.data.batch import Batch
from seqlab.errors import ConfigError, TrainingError
from seqlab.train.checkpoint import CheckpointManager
from seqlab.train.distributed import Ranks, shard
from seqlab.train.trainer import Trainer

CHILD = Path(__file__).with_name("dist_child.py")


# -- sharding ------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 9), world=st.integers(1, 4), T=st.integers(1, 5))
def test_shards_partition_the_batch_rows(n, world, T):
    inputs = torch.arange(n * T).reshape(n, T)
    mask = torch.arange(T)[None, :] < torch.randint(1, T + 1, (n, 1))
    batch = Batch(inputs, inputs + 1, mask, {"scored": mask.clone()}, torch.arange(n))
    parts = [shard(batch, r, world) for r in range(world)]
    sizes = [p.size for p in parts]
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
    for field in ("inputs", "targets", "padding_mask", "index"):
        joined = torch.cat([getattr(p, field) for p in parts])
        assert torch.equal(joined, getattr(batch, field))
    assert torch.equal(torch.cat([p.extras["scored"] for p in parts]), batch.extras["scored"])
    assert all(p.inputs.shape[1:] == inputs.shape[1:] for p in parts)


def test_one_process_alone_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = Ranks.join(torch.device("cpu"), timeout_s=1)
    assert not ranks.enabled and ranks.is_main
    assert ranks.sum([1.5, 2.0]) == [1.5, 2.0] and ranks.gather("x") == ["x"]
    batch = Batch(torch.zeros(3, 2, dtype=torch.long))
    assert ranks.shard(batch) is batch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_process_group_that_cannot_form_times_out_with_a_clear_message(tmp_path, monkeypatch):
    config = lm_config(tmp_path / "corpus", dist_timeout=3)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")  # rank 1 never starts
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with pytest.raises(TrainingError, match=r"rank 0 of 2: the process group at 127\.0\.0\.1:\d+ "
                                            r"did not form within 3 s \(train.dist_timeout\)"):
        Trainer(config, tmp_path / "run").fit()
    assert not (tmp_path / "run").exists()


def test_a_launch_without_an_address_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TrainingError, match="RANK, MASTER_ADDR, MASTER_PORT are not set; "
                                            "start training with torchrun"):
        Trainer(lm_config(tmp_path / "corpus"), tmp_path / "run").fit()


# -- torchrun ------------------------------------------------------------------------------
def lm_config(corpus: Path, **train) -> RunConfig:
    if not corpus.exists():
        corpus.mkdir(parents=True)
        text = "the quick brown fox jumps over the lazy dog. " * 40
        for i in range(3):
            (corpus / f"doc{i}.txt").write_text(f"document {i}: " + text)
    return RunConfig.from_dict({
        "seed": 3,
        "model": {"mixer": ["attention", "lstm"], "d_model": 32, "n_layers": 2, "n_heads": 4,
                  "context_length": 16, "dropout": 0.0, "position": "rope"},
        "data": {"path": str(corpus), "val_fraction": 0.2},
        "train": {"steps": 8, "batch_size": 6, "grad_accum": 2, "lr": 3e-3, "warmup_steps": 2,
                  "eval_every": 4, "save_every": 2, "eval_batches": 2, "log_every": 2,
                  "progress": False, "num_threads": 1, **train},
    })


def classify_config(folder: Path) -> RunConfig:
    """Padded classification whose global batch of 5 splits 2 + 3, and whose last batch
    of each epoch (21 = 4 * 5 + 1 examples) leaves rank 0 with no row at all."""
    rng = random.Random(1)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.jsonl", 21), ("val.jsonl", 8)):
        rows = []
        for _ in range(n):
            label = rng.choice("ab")
            text = "".join(rng.choice(label + "xyz") for _ in range(rng.randint(3, 14)))
            rows.append(json.dumps({"text": text, "label": label}) + "\n")
        (folder / name).write_text("".join(rows))
    return RunConfig.from_dict({
        "task": "classify", "seed": 0,
        "model": {"mixer": ["lstm", "attention"], "d_model": 16, "n_layers": 2, "n_heads": 2,
                  "causal": False, "context_length": 32, "position": "rope"},
        "data": {"source": "examples", "path": str(folder / "train.jsonl"),
                 "val_path": str(folder / "val.jsonl"), "bucket": True},
        "train": {"steps": 10, "batch_size": 5, "lr": 1e-2, "warmup_steps": 1, "eval_every": 5,
                  "log_every": 1, "progress": False, "num_threads": 1},
    })


def torchrun(config: RunConfig, out: Path, *extra: str, restarts: int = 0,
             timeout: float = 120) -> subprocess.CompletedProcess:
    path = out.with_suffix(".yaml")
    path.write_text(config.to_yaml())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "--max-restarts", str(restarts), "--monitor-interval", "0.2",
         str(CHILD), str(path), str(out), *extra],
        capture_output=True, text=True, timeout=timeout, env=env)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return CheckpointManager(run / "trainer").load_latest().model


def losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    """The causal LM trained once on one process, once on two ranks (DDP) and once on
    two ranks sharded (FSDP)."""
    root = tmp_path_factory.mktemp("lm")
    config = lm_config(root / "corpus")
    Trainer(config, root / "one").fit()
    for name, fsdp in (("two", False), ("fsdp", True)):
        done = torchrun(config.replace([f"train.fsdp={fsdp}"]), root / name)
        assert done.returncode == 0, done.stderr
    return root, config


def assert_close(a: dict, b: dict, atol=2e-5):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < atol, worst


@pytest.mark.parametrize("name", ["two", "fsdp"])
def test_two_ranks_train_a_causal_lm_as_one_does(lm_runs, name):
    root, _ = lm_runs
    assert_close(weights(root / "one"), weights(root / name))
    assert losses(root / name) == pytest.approx(losses(root / "one"), rel=1e-5)
    one, two = seqlab.load(root / "one"), seqlab.load(root / name)
    assert two.generate("the ", max_new_tokens=12, temperature=0) == \
        one.generate("the ", max_new_tokens=12, temperature=0)
    manifest = CheckpointManager(root / name / "trainer").load_latest().state
    assert manifest["world_size"] == 2 and len(manifest["rng_ranks"]) == 2
    # Rank 0 alone wrote the run: one metrics line per log step, not two.
    assert [json.loads(x)["step"] for x in (root / name / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(x)] == [2, 4, 6, 8]


def test_two_ranks_train_a_padded_classifier_as_one_does(tmp_path):
    config = classify_config(tmp_path / "data")
    trainer = Trainer(config, tmp_path / "one")
    trainer.fit()
    (tmp_path / "rows").mkdir()
    done = torchrun(config, tmp_path / "two", "--rows", str(tmp_path / "rows"))
    assert done.returncode == 0, done.stderr
    # Each rank trained on its contiguous share of the one-process batch, no more.
    shares = [[json.loads(x) for x in (tmp_path / "rows" / f"rank{r}.jsonl").read_text().splitlines()]
              for r in (0, 1)]
    single = 0
    for step, (a, b) in enumerate(zip(*shares)):
        expected = trainer.objective.train_batch(step, 0).index.tolist()
        if len(expected) == 1:  # rank 0's share is empty: it runs the row, counting nothing
            assert a == b == expected
            single += 1
        else:
            assert a + b == expected and len(b) - len(a) in (0, 1)
    assert single  # the epoch's last batch of one example came up
    assert_close(weights(tmp_path / "one"), weights(tmp_path / "two"))
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)


def test_elastic_restart_after_a_rank_dies_ends_with_the_uninterrupted_weights(lm_runs, tmp_path):
    root, config = lm_runs
    done = torchrun(config, tmp_path / "run", "--fault", "exit", "--rank", "1", "--step", "5",
                    restarts=1)
    assert done.returncode == 0, done.stderr
    # The restarted group resumed from step 4 (a fresh start would refuse the run
    # directory, which holds weights) and ended where an uninterrupted 2-rank run ends,
    # bit for bit.
    final = weights(tmp_path / "run")
    reference = weights(root / "two")
    assert all(torch.equal(final[k], reference[k]) for k in reference)
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(x)] == [2, 4, 6, 8]


def test_a_rank_that_dies_stops_the_others_and_leaves_the_last_checkpoint_intact(lm_runs, tmp_path):
    _, config = lm_runs
    done = torchrun(config, tmp_path / "run", "--fault", "exit", "--rank", "1", "--step", "5",
                    timeout=90)
    assert done.returncode != 0
    latest = CheckpointManager(tmp_path / "run" / "trainer").load_latest()
    assert latest.step == 4 and latest.state["world_size"] == 2


@pytest.mark.parametrize("name", ["two", "fsdp"])
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_and_resume_is_exact(lm_runs, tmp_path,
                                                                                   name):
    root, config = lm_runs
    config = config.replace([f"train.fsdp={name == 'fsdp'}"])
    done = torchrun(config, tmp_path / "run", "--fault", "sigterm", "--rank", "1", "--step", "3")
    assert done.returncode != 0  # the job exits 130: interrupted, not finished
    assert "interrupted at step 3" in done.stdout, done.stdout + done.stderr
    assert CheckpointManager(tmp_path / "run" / "trainer").latest_step() == 3
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "seqlab", "train",
                           str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"),
                           "--resume", "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    final, reference = weights(tmp_path / "run"), weights(root / name)
    assert all(torch.equal(final[k], reference[k]) for k in reference)


def test_resuming_on_another_number_of_ranks_is_refused(lm_runs, tmp_path):
    root, config = lm_runs
    with pytest.raises(ConfigError, match=r"cannot resume .* on 1 rank\(s\): its checkpoint at "
                                          r"step 8 was written by 2\..*torchrun --nproc-per-node 2"):
        Trainer(config.replace(["train.steps=10"]), root / "two", resume=True).fit()


def test_resuming_a_ddp_run_sharded_is_refused(lm_runs, tmp_path):
    root, config = lm_runs
    path = tmp_path / "fsdp.yaml"
    path.write_text(config.replace(["train.steps=10", "train.fsdp=true"]).to_yaml())
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "seqlab", "train", str(path),
                           "--out", str(root / "two"), "--resume", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert ("cannot resume {} with train.fsdp true: its checkpoint at step 8 was written with "
            "train.fsdp false".format(root / "two")) in done.stderr
    assert CheckpointManager(root / "two" / "trainer").latest_step() == 8


def test_two_nodes_meet_through_a_c10d_rendezvous(lm_runs, tmp_path):
    """Two torchrun agents, as on two machines (here both on loopback), one rank each."""
    root, config = lm_runs
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "seqlab-test",
         "-m", "seqlab", "train", str(path), "--out", str(tmp_path / "run"), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=120) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert sum("run directory:" in out for out, _ in outputs) == 1  # rank 0 reports
    assert_close(weights(root / "one"), weights(tmp_path / "run"))
