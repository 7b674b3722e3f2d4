"""Prepared token shards: ``seqlab data prepare`` in parallel processes, the memory-mapped
stream, training from shards equal to training from text, memory far below the data's
size, and every kind of bad input."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab import cli
from seqlab.config import RunConfig
from seqlab.data.shards import TokenShards, read_index
from seqlab.data.text import read_corpus, resolve_paths
from seqlab.data.tokenizer_base import load_tokenizer
from seqlab.errors import ConfigError, DataError
from seqlab.prepare import prepare_shards
from seqlab.train.checkpoint import CheckpointManager
from seqlab.train.trainer import Trainer


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(1, 7), min_size=1, max_size=5), data=st.data())
def test_shards_read_as_their_concatenation(tmp_path_factory, sizes, data):
    folder = tmp_path_factory.mktemp("maps")
    arrays = [np.arange(sum(sizes[:i]), sum(sizes[:i + 1]), dtype=np.uint16) for i in range(len(sizes))]
    maps = []
    for i, a in enumerate(arrays):
        a.tofile(folder / f"{i}.bin")
        maps.append(np.memmap(folder / f"{i}.bin", dtype=np.uint16, mode="r"))
    whole = np.concatenate(arrays).astype(np.int64)
    n = len(whole)
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, n))
    stream = TokenShards(maps).window(start, stop)
    assert len(stream) == stop - start
    expected = torch.from_numpy(whole[start:stop])
    assert torch.equal(stream[:], expected)
    if len(stream):
        positions = torch.tensor(data.draw(st.lists(st.integers(0, len(stream) - 1), min_size=1,
                                                    max_size=12))).reshape(-1, 1)
        assert torch.equal(stream[positions], expected[positions])
    with pytest.raises(IndexError):
        stream[torch.tensor([len(stream)])]


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "ünï", "código", "\n"]
    for i in range(7):
        text = " ".join(rng.choice(words, size=int(rng.integers(50, 400))))
        (folder / f"doc{i}.txt").write_text(f"document {i}: {text}", encoding="utf-8")
    return folder


def lm_config(corpus, **data) -> RunConfig:
    return RunConfig.from_dict({
        "seed": 5,
        "model": {"mixer": ["attention", "lstm"], "d_model": 32, "n_layers": 2, "n_heads": 4,
                  "context_length": 32, "dropout": 0.0, "position": "rope"},
        "data": {"path": str(corpus), "val_fraction": 0.1, **data},
        "train": {"steps": 6, "batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "eval_every": 3,
                  "eval_batches": 3, "log_every": 1, "progress": False, "num_threads": 1},
    })


def from_shards(config: RunConfig, shards: Path, *overrides: str) -> RunConfig:
    """``config`` reading the prepared ``shards`` instead of its text files."""
    d = config.to_dict()
    d["data"] = {"source": "shards", "path": str(shards), "val_fraction": config.data.val_fraction}
    return RunConfig.from_dict(d).replace(list(overrides))


def test_training_from_shards_equals_training_from_text(corpus, tmp_path):
    """Two worker processes and shards of 300 ids: training windows cross shard and
    worker boundaries, and still the batches, losses and weights are the text source's."""
    config = lm_config(corpus)
    index = prepare_shards(config, tmp_path / "shards", workers=2, shard_tokens=300)
    assert index["made_from"]["workers"] == 2 and len(index["shards"]) > 4
    assert {s["file"].split("-")[1] for s in index["shards"]} == {"00000", "00001"}
    Trainer(config, tmp_path / "text").fit()
    # The text config with its source switched, as `seqlab data prepare` suggests:
    switched = config.replace(["data.source=shards", f"data.path={tmp_path / 'shards'}"])
    Trainer(switched, tmp_path / "shards-run").fit()
    a = CheckpointManager(tmp_path / "text" / "trainer").load_latest().model
    b = CheckpointManager(tmp_path / "shards-run" / "trainer").load_latest().model
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [(tmp_path / run / "metrics.jsonl").read_text() for run in ("text", "shards-run")]
    strip = [[{k: v for k, v in json.loads(x).items() if not k.endswith("_per_s")}
              for x in m.splitlines()] for m in metrics]
    assert strip[0] == strip[1]


def test_the_stream_is_the_text_sources_with_a_learned_vocabulary_and_a_cap(corpus, tmp_path):
    config = lm_config(corpus, max_bytes=2500, shuffle_files=False)
    config.tokenizer.kind = "char"
    prepare_shards(config, tmp_path / "shards", workers=1, shard_tokens=97)
    tokenizer = load_tokenizer(tmp_path / "shards" / "tokenizer.json")
    expected = read_corpus(resolve_paths(str(corpus)), tokenizer, max_bytes=2500).tokens.long()
    assert tokenizer.kind == "char"
    assert torch.equal(TokenShards.open(tmp_path / "shards", verify=True)[:], expected)
    assert read_index(tmp_path / "shards")["documents"] < 7  # the cap stopped early


MEMORY_CHILD = textwrap.dedent("""
    import json, sys
    from seqlab.config import RunConfig
    from seqlab.train.trainer import Trainer
    def anon_kib():  # memory the process holds itself: not mapped file pages the kernel
        for line in open("/proc/self/status"):  # can drop, nor a parent's peak (ru_maxrss)
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    config = RunConfig.from_yaml(sys.argv[1])
    base = anon_kib()
    trainer = Trainer(config, sys.argv[2])
    trainer.fit()  # the trainer, and its data, still alive
    print(json.dumps({"added_mib": (anon_kib() - base) / 1024}))
""")


def test_training_from_shards_stays_far_below_their_size_in_memory(tmp_path):
    """128 MiB of shards (64 Mi byte tokens): training reads a few windows of them, and
    memory grows by a small fraction of that. The same corpus through the text source,
    which holds the stream in memory, grows by more than the shards' size (the control
    that shows the measurement can fail)."""
    corpus = tmp_path / "big.txt"
    rng = np.random.default_rng(0)
    corpus.write_bytes(rng.integers(97, 123, 64 << 20, dtype=np.uint8).tobytes())
    config = lm_config(corpus, val_fraction=0.01)
    prepare_shards(config, tmp_path / "shards", workers=1)
    shard_mib = sum(p.stat().st_size for p in (tmp_path / "shards").glob("tokens-*.bin")) / 2**20
    assert shard_mib == pytest.approx(128, abs=0.01)  # and two eos
    small = tmp_path / "small.txt"  # training alone (model, optimizer, kernels): the baseline
    small.write_bytes(corpus.read_bytes()[:1 << 16])
    added = {}
    for name, run_config in (("shards", from_shards(config, tmp_path / "shards")), ("text", config),
                             ("baseline", lm_config(small, val_fraction=0.01))):
        path = tmp_path / f"{name}.yaml"
        path.write_text(run_config.replace(["train.steps=3", "train.eval_batches=2"]).to_yaml())
        done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(path), str(tmp_path / f"run-{name}")],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        added[name] = json.loads(done.stdout.strip().splitlines()[-1])["added_mib"]
    print(f"memory added: shards {added['shards']:.1f} MiB, text {added['text']:.1f} MiB, "
          f"training a 64 KiB text {added['baseline']:.1f} MiB ({shard_mib:.0f} MiB of shards)")
    assert added["shards"] - added["baseline"] < shard_mib / 8, added
    assert added["text"] - added["baseline"] > shard_mib, added


# -- bad input -----------------------------------------------------------------------------
def test_prepare_refuses_a_finished_directory_and_clears_an_unfinished_one(corpus, tmp_path):
    config = lm_config(corpus)
    out = tmp_path / "shards"
    out.mkdir()
    (out / "tokens-00000-00000.bin").write_bytes(b"\x01\x02\x03")  # a crashed attempt's
    prepare_shards(config, out, workers=1)
    assert read_index(out)["shards"][0]["tokens"] > 3
    with pytest.raises(DataError, match="already holds prepared shards"):
        prepare_shards(config, out, workers=1)


def test_prepare_reads_text_configs_only(tmp_path):
    config = RunConfig.from_dict({"task": "classify", "data": {"source": "examples",
                                                               "path": str(tmp_path)}})
    with pytest.raises(ConfigError, match="data.source: text.*data.source is 'examples'"):
        prepare_shards(config, tmp_path / "out")


def test_damaged_or_missing_shards_are_named(corpus, tmp_path):
    out = tmp_path / "shards"
    prepare_shards(lm_config(corpus), out, workers=1, shard_tokens=500)
    with pytest.raises(DataError, match="has no index.json: it is not a prepared directory"):
        read_index(corpus)
    with pytest.raises(DataError, match="is not a directory of prepared token shards"):
        read_index(tmp_path / "nowhere")
    shard = sorted(out.glob("tokens-*.bin"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[:-2])
    with pytest.raises(DataError, match=rf"{shard.name} holds {len(data) - 2} bytes, but "
                                        r"index.json says \d+ tokens"):
        TokenShards.open(out)
    shard.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # right size, wrong content
    TokenShards.open(out)  # sizes alone cannot tell
    with pytest.raises(DataError, match=rf"{shard.name} does not match the sha256"):
        TokenShards.open(out, verify=True)
    shard.unlink()
    with pytest.raises(DataError, match=rf"shard {shard.name} listed in index.json is missing"):
        TokenShards.open(out)
    (out / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="index.json is not valid JSON"):
        read_index(out)


def test_a_tokenizer_other_than_the_shards_is_refused(corpus, tmp_path):
    prepare_shards(lm_config(corpus), tmp_path / "shards", workers=1)
    other = tmp_path / "other.json"
    other.write_text((tmp_path / "shards" / "tokenizer.json").read_text())
    config = from_shards(lm_config(corpus), tmp_path / "shards", f"tokenizer.path={other}")
    with pytest.raises(ConfigError, match="was encoded with .*tokenizer.json; leave tokenizer.path unset"):
        Trainer(config, tmp_path / "run").fit()


def test_the_command_prepares_and_says_how_to_train(corpus, tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(lm_config(corpus).to_yaml())
    assert cli.main(["data", "prepare", str(path), "--out", str(tmp_path / "shards"),
                     "--workers", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "prepared" in out and "from 7 files" in out
    assert f"--set data.source=shards --set data.path={tmp_path / 'shards'}" in out
    assert cli.main(["data", "prepare", str(path), "--out", str(tmp_path / "shards"), "-q"]) == 2
    assert "already holds prepared shards" in capsys.readouterr().err
