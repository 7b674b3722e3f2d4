"""Byte-level BPE tokenizers (Hugging Face ``tokenizers``): files the library itself loads,
lossless round trips, exact byte counts for bits per byte, streamed training input, and
training runs that use them."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab import cli
from seqlab.config import RunConfig
from seqlab.data.bpe import SPECIALS, stream_texts, train_bpe
from seqlab.data.tokenizer_base import load_tokenizer
from seqlab.errors import ConfigError, TokenizerError

tokenizers = pytest.importorskip("tokenizers")

TEXT = ("def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0  # ünïcødé ✓\n" * 40)


@pytest.fixture(scope="module")
def bpe():
    return train_bpe([TEXT], vocab_size=300)


@settings(max_examples=60, deadline=None)
@given(text=st.text(st.characters(exclude_categories=("Cs",)), max_size=60))
def test_round_trip_and_exact_byte_counts(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert bpe.count_units(ids) == len(text.encode("utf-8"))  # bits per byte stay exact
    assert all(i >= len(SPECIALS) for i in ids)


def test_the_file_is_the_tokenizers_librarys_own(bpe, tmp_path):
    bpe.save(tmp_path / "tokenizer.json")
    theirs = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(tmp_path / "tokenizer.json")
    assert ours.kind == "bpe" and ours.vocab_size == theirs.get_vocab_size() == 300
    assert [ours.pad_id, ours.bos_id, ours.eos_id, ours.mask_id] == [0, 1, 2, 3]
    assert theirs.encode("return a + b").ids == ours.encode("return a + b")
    assert ours == bpe


def test_bad_files_and_sizes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs at least 260 ids"):
        train_bpe([TEXT], vocab_size=100)
    # A BPE file made elsewhere, with other special tokens.
    other = tokenizers.Tokenizer(tokenizers.models.BPE())
    other.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel()
    other.train_from_iterator([TEXT], tokenizers.trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<|endoftext|>"], show_progress=False))
    other.save(str(tmp_path / "other.json"))
    with pytest.raises(TokenizerError, match=r"other.json: a bpe tokenizer needs <pad>, <bos>, "
                                             r"<eos>, <mask> as ids 0..3"):
        load_tokenizer(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": 3}}))
    with pytest.raises(TokenizerError, match="bad.json: not a valid tokenizers JSON"):
        load_tokenizer(tmp_path / "bad.json")


@settings(max_examples=40, deadline=None)
@given(text=st.text(st.characters(exclude_categories=("Cs",)), max_size=200),
       block=st.integers(1, 9))
def test_streamed_blocks_reassemble_the_file(tmp_path_factory, text, block):
    path = tmp_path_factory.mktemp("s") / "f.txt"
    path.write_bytes(text.encode("utf-8"))
    blocks = list(stream_texts([path], block_bytes=block))
    assert "".join(blocks) == text
    # A block ends at a line end, unless it holds no line end at all (a long line).
    assert all(b.endswith("\n") or "\n" not in b for b in blocks[:-1])


def test_the_byte_cap_stops_reading(tmp_path):
    path = tmp_path / "dna.txt"
    path.write_text("ACGT" * 10_000)  # one unbroken line
    read = "".join(stream_texts([path, path], max_bytes=1000, block_bytes=256))
    assert read == ("ACGT" * 10_000)[:1000]


def test_a_language_model_trains_on_a_learned_bpe_vocabulary(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT * 3)
    config = RunConfig.from_dict({
        "seed": 0, "tokenizer": {"kind": "bpe", "vocab_size": 320},
        "model": {"mixer": "lstm", "d_model": 32, "n_layers": 1, "context_length": 32,
                  "position": "none"},
        "data": {"path": str(tmp_path / "corpus.txt")},
        "train": {"steps": 20, "batch_size": 8, "lr": 1e-2, "eval_every": 20, "eval_batches": 4,
                  "progress": False, "num_threads": 1}})
    result = seqlab.fit(config, tmp_path / "run")
    pipeline = seqlab.load(tmp_path / "run")
    # At most 320: this small corpus runs out of pairs seen twice before that.
    assert pipeline.tokenizer.kind == "bpe" and pipeline.config.model.vocab_size <= 320
    assert pipeline.config.model.vocab_size == pipeline.tokenizer.vocab_size
    # Bits per byte: the summed loss in bits over the bytes the scored tokens stand for.
    bpb, loss = result.metrics["bits_per_byte"], result.metrics["val_loss"]
    tokens_per_byte = bpb * math.log(2) / loss
    assert 0.2 < tokens_per_byte < 1.0  # merges: fewer tokens than bytes
    assert isinstance(pipeline.generate("def ", max_new_tokens=10, seed=0), str)
    with pytest.raises(ConfigError, match="tokenizer.vocab_size applies to kind bpe"):
        RunConfig.from_dict({"tokenizer": {"kind": "byte", "vocab_size": 300}})


def test_the_train_command(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(TEXT)
    out = tmp_path / "tok.json"
    assert cli.main(["tokenizer", "train", str(tmp_path / "a.txt"), "--vocab-size", "280",
                     "--out", str(out), "-q"]) == 0
    assert "280 ids" in capsys.readouterr().out
    assert tokenizers.Tokenizer.from_file(str(out)).get_vocab_size() == 280
    assert cli.main(["tokenizer", "train", str(tmp_path / "missing.txt"), "--vocab-size", "280",
                     "--out", str(out), "-q"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _dna(n: int, seed: int = 0) -> str:
    import random
    rng = random.Random(seed)
    return "".join(rng.choice("ACGT") for _ in range(n))


def test_words_of_k_characters_bound_the_tokens(tmp_path):
    # A repeat of period 10: without words, merges would grow far past 6 characters.
    tokenizer = train_bpe(stream_texts([_write(tmp_path / "g.txt", "ACGTTGCAAT" * 6_000)]),
                          vocab_size=400, word_chars=6)
    tokens = [tokenizer.inner.id_to_token(i) for i in range(len(SPECIALS), tokenizer.vocab_size)]
    assert max(len(t) for t in tokens) == 6  # merges grew to whole words, never past them
    dna = _dna(5_000, seed=1)
    assert tokenizer.decode(tokenizer.encode_array(dna)) == dna
    assert tokenizer.count_units(tokenizer.encode_array(dna)) == len(dna)
    with pytest.raises(ConfigError, match="word_chars must be >= 2"):
        train_bpe(["ACGT"], vocab_size=300, word_chars=1)


MEMORY_PROBE = """
import random, resource, sys
from seqlab.data.bpe import stream_texts, train_bpe
rng = random.Random(0)
with open(sys.argv[1], "w") as f:
    for _ in range(8):  # 8 MB of one unbroken line of DNA
        f.write("".join(rng.choices("ACGT", k=1 << 20)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
train_bpe(stream_texts([sys.argv[1]]), vocab_size=1024, word_chars=8)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_training_on_an_unbroken_dna_string_stays_under_its_memory_cap(tmp_path):
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "dna.txt")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # About 75 MB at word_chars 8 (the cap, whatever the size); without words 8 MB of
    # DNA took 561 MB.
    assert int(done.stdout.split()[-1]) < 200


def test_fasta_and_gzip_files_are_read_as_their_sequences(tmp_path):
    import gzip
    fasta = ">chr1 a header\nACGTAC\nGGTT\n;a comment\n>chr2\nTTTT\n"
    plain = _write(tmp_path / "g.fa", fasta)
    packed = tmp_path / "g.fasta.gz"
    packed.write_bytes(gzip.compress(fasta.encode()))
    for path in (plain, packed):
        assert "".join(stream_texts([path], block_bytes=5)) == "ACGTAC\nGGTT\nTTTT\n"
    assert "".join(stream_texts([_write(tmp_path / "g.txt", fasta)])) == fasta  # not FASTA: kept


def test_the_train_command_takes_word_chars(tmp_path, capsys):
    out = tmp_path / "dna.json"
    assert cli.main(["tokenizer", "train", str(_write(tmp_path / "g.fa", ">x\n" + _dna(20_000))),
                     "--vocab-size", "300", "--word-chars", "5", "--out", str(out), "-q"]) == 0
    vocab = tokenizers.Tokenizer.from_file(str(out)).get_vocab()
    merged = [t for t in vocab if t not in SPECIALS and len(t) > 1]
    assert merged and max(map(len, merged)) <= 5 and set("".join(merged)) <= set("ACGT")


def _write(path, text: str):
    path.write_text(text)
    return path


@settings(max_examples=40, deadline=None)
@given(lines=st.lists(st.sampled_from([">id one", ";note", "ACGT", "", "GG>T", "NNNNNNNNNNNN"]),
                      max_size=12), block=st.integers(1, 9))
def test_fasta_headers_are_dropped_whatever_the_blocks(tmp_path_factory, lines, block):
    path = tmp_path_factory.mktemp("f") / "x.fa"
    path.write_text("\n".join(lines))
    kept = "".join(f"{line}\n" for line in lines[:-1] if line[:1] not in (">", ";"))
    if lines and lines[-1][:1] not in (">", ";"):
        kept += lines[-1]  # the last line, without a newline
    assert "".join(stream_texts([path], block_bytes=block)) == kept
