"""Bad input of issue 10, each a one-line error naming what is at fault (or a documented
behaviour): unknown residue letters (reported once per file, or an error by policy),
malformed or corrupt FASTA/FASTQ, label files whose ids do not match the records,
``seqlab finetune --from`` a run that is missing, not a run, or damaged, or with another
tokenizer than the config's, and LoRA on a mixer with no projections.

Cases covered elsewhere: a FASTA without a '>' header, a short FASTQ quality line and an
empty file (tests/data/test_sequence_files.py::test_malformed_sequence_files_are_named);
tags of another length (test_per_residue_tags_from_a_companion_fasta); LoRA targets that
match nothing in a bare module and a changed or missing base (tests/train/test_lora.py).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import random
import shutil
from pathlib import Path

import pytest
import yaml

import seqlab
from seqlab.cli import main
from seqlab.config import RunConfig
from seqlab.data.bio_tokenizers import DNATokenizer, KmerTokenizer
from seqlab.data.examples import report_unknown
from seqlab.data.records import read_records
from seqlab.errors import ConfigError, DataError

pytest.importorskip("Bio")

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def proteins(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"P{i:03d}", "".join(rng.choice(AMINO) for _ in range(rng.randint(8, 14))))
            for i in range(n)]


def fasta(records, *, family: bool = True) -> str:
    return "".join(f">{pid}{' fam=' + 'ab'[i % 2] if family else ''}\n{seq}\n"
                   for i, (pid, seq) in enumerate(records))


def config(task: str, data: dict, *, tokenizer: dict | None = None, model: dict | None = None,
           **extra) -> dict:
    return {"task": task, "seed": 0, "tokenizer": {"kind": "protein"} if tokenizer is None else tokenizer,
            "model": {"mixer": "lstm", "d_model": 16, "n_layers": 1, "causal": False,
                      "context_length": 24, "position": "none", **(model or {})},
            "data": {"source": "examples", **data},
            "train": {"steps": 2, "batch_size": 4, "eval_every": 2, "progress": False,
                      "num_threads": 1}, **extra}


def fit(cfg: dict, run: Path):
    return seqlab.fit(RunConfig.from_dict(cfg), run)


def cli(*args) -> tuple[int, str]:
    """``seqlab ARGS`` in this process: its exit status and its stderr's lines."""
    root, seqlab_logger = logging.getLogger(), logging.getLogger("seqlab")
    handlers, level = root.handlers[:], seqlab_logger.level
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = main([*map(str, args), "-q"])
    finally:
        root.handlers[:] = handlers
        seqlab_logger.setLevel(level)
    return code, err.getvalue()


def one_line_error(code: int, err: str) -> str:
    assert "Traceback" not in err and code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqlab: error: "), err
    return lines[0].removeprefix("seqlab: error: ")


# -- 1. unknown residues ------------------------------------------------------------------

def test_unknown_residues_are_read_as_unk_and_reported_once_per_file(tmp_path, caplog):
    train = proteins(12)
    train[2] = ("P002", "MK*VL1")  # '*' (a stop) and '1' are not amino acids
    train[7] = ("P007", "MKV*")
    train[9] = ("P009", "BZXJUO")  # the ambiguity codes are letters of the alphabet
    val = proteins(6, seed=1)
    val[0] = ("Q000", "AC-DE")
    (tmp_path / "train.fasta").write_text(fasta(train))
    (tmp_path / "val.fasta").write_text(fasta(val))
    data = {"path": str(tmp_path / "train.fasta"), "val_path": str(tmp_path / "val.fasta"),
            "header_label": r"fam=(\w)"}
    with caplog.at_level(logging.WARNING, logger="seqlab"):
        fit(config("classify", data), tmp_path / "run")
    reports = [r.getMessage() for r in caplog.records if "outside the protein alphabet" in r.getMessage()]
    train_reports = [m for m in reports if m.startswith(str(tmp_path / "train.fasta"))]
    val_reports = [m for m in reports if m.startswith(str(tmp_path / "val.fasta"))]
    assert len(train_reports) == 1 and len(val_reports) == 1, reports
    assert "3 letters" in train_reports[0] and "in 2 of its 12 records" in train_reports[0]
    assert "'*' x2" in train_reports[0] and "'1' x1" in train_reports[0]
    assert "record 3 (P002)" in train_reports[0]
    assert "1 letters" in val_reports[0] and "'-' x1" in val_reports[0]


def test_unknown_residues_are_an_error_when_the_policy_says_so(tmp_path):
    train = proteins(8)
    train[3] = ("P003", "MKV*")
    (tmp_path / "train.fasta").write_text(fasta(train))
    data = {"path": str(tmp_path / "train.fasta"), "header_label": r"fam=(\w)", "unknown": "error"}
    with pytest.raises(DataError, match=r"train.fasta: record 4 \(P003\): '\*' x1 outside the "
                                        rf"protein alphabet \({AMINO}BZXJUO\)"):
        fit(config("classify", data), tmp_path / "run")
    with pytest.raises(ConfigError, match="data.unknown must be one of warn, error, got 'ignore'"):
        fit(config("classify", {**data, "unknown": "ignore"}), tmp_path / "run2")


def test_unknown_nucleotides_for_dna_and_kmer_tokenizers(tmp_path, caplog):
    (tmp_path / "g.fa").write_text(">g1\nACGTNnRY\n>g2\nAC-GX\n>g3\nACGT\n")
    records = read_records(tmp_path / "g.fa")
    for tokenizer, report in [(DNATokenizer(), "2 letters outside the dna alphabet"),  # N, R, Y are IUPAC
                              (KmerTokenizer(3), "6 letters outside the kmer alphabet")]:
        rows = [tokenizer.encode_array(r.fields["text"]) for r in records]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="seqlab"):
            report_unknown(records, rows, tokenizer, text_field="text")
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 1 and report in messages[0], messages
        with pytest.raises(DataError, match=r"g.fa: record \d \(g\d\): .* outside the"):
            report_unknown(records, rows, tokenizer, text_field="text", policy="error")


# -- 2. malformed and corrupt sequence files ----------------------------------------------

def test_a_fastq_record_whose_quality_differs_in_length_is_named(tmp_path):
    (tmp_path / "r.fastq").write_text("@r1\nAC\n+\nII\n@r2\nAC\n+\nII\n@r3\nACGT\n+\nII\n")
    with pytest.raises(DataError, match=r"r.fastq: not valid FASTQ at record 3: .*r3 \(4 and 2\)"):
        read_records(tmp_path / "r.fastq")
    (tmp_path / "t.fastq").write_text("@r1\nAC\n+\nII\n@r2\nAC\n")
    with pytest.raises(DataError, match=r"t.fastq: not valid FASTQ at record 2: End of file"):
        read_records(tmp_path / "t.fastq")


def test_an_empty_fasta_record_is_named(tmp_path):
    (tmp_path / "e.fasta").write_text(">P000 fam=a\nMKV\n>P001 fam=b\n>P002 fam=a\nMKL\n")
    with pytest.raises(DataError, match=r"e.fasta: record 2 \(P001\): the example is empty"):
        fit(config("classify", {"path": str(tmp_path / "e.fasta"), "header_label": r"fam=(\w)"}),
            tmp_path / "run")


def test_truncated_corrupt_or_unzipped_gzip_files_are_named(tmp_path):
    rng = random.Random(0)
    body = "".join(f">s{i}\n{''.join(rng.choice('ACGT') for _ in range(60))}\n" for i in range(3000))
    data = gzip.compress(body.encode())
    (tmp_path / "cut.fa.gz").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"cut.fa.gz: not readable gzip \(truncated or corrupt\) "
                                        r"after record \d+ \(s\d+\): Compressed file ended"):
        read_records(tmp_path / "cut.fa.gz")
    damaged = bytearray(gzip.compress(b">a\nACGT\n>b\nACGTACGT\n" * 200))
    damaged[30:40] = b"x" * 10
    (tmp_path / "bad.fa.gz").write_bytes(bytes(damaged))
    with pytest.raises(DataError, match=r"bad.fa.gz: not readable gzip \(truncated or corrupt\) "
                                        "before its first record"):
        read_records(tmp_path / "bad.fa.gz")
    (tmp_path / "plain.fa.gz").write_text(">a\nACGT\n")
    with pytest.raises(DataError, match=r"plain.fa.gz: not readable gzip .*Not a gzipped file"):
        read_records(tmp_path / "plain.fa.gz")


# -- 3. labels keyed by record id ---------------------------------------------------------

def test_label_ids_that_do_not_match_name_a_few_on_each_side(tmp_path):
    train = proteins(10)
    (tmp_path / "train.fasta").write_text(fasta(train, family=False))
    # ids written as UniProt headers: none matches a record id
    (tmp_path / "labels.csv").write_text("id,family\n" + "".join(f"sp|{p}|,{'ab'[i % 2]}\n"
                                                                 for i, (p, _) in enumerate(train)))
    data = {"path": str(tmp_path / "train.fasta"), "labels": str(tmp_path / "labels.csv"),
            "label_field": "family"}
    with pytest.raises(DataError) as e:
        fit(config("classify", data), tmp_path / "run")
    message = str(e.value)
    assert "\n" not in message
    assert "record 1 (P000): " in message and "labels.csv has no entry for 'P000'" in message
    assert "10 of 10 records have none ('P000', 'P001', 'P002' ... (10))" in message
    assert "ids that name no record here are: 'sp|P000|', 'sp|P001|', 'sp|P002|' ... (10)" in message


def test_extra_label_ids_are_ignored_and_duplicates_refused(tmp_path):
    train = proteins(8)
    (tmp_path / "train.fasta").write_text(fasta(train, family=False))
    rows = [f"{p},{'ab'[i % 2]}\n" for i, (p, _) in enumerate(train)]
    # Documented: one labels file covers path, val_path and eval_sets, so ids of other
    # splits (here X999) are no error.
    (tmp_path / "labels.csv").write_text("id,family\n" + "".join(rows) + "X999,a\n")
    data = {"path": str(tmp_path / "train.fasta"), "labels": str(tmp_path / "labels.csv"),
            "label_field": "family"}
    fit(config("classify", data), tmp_path / "run")
    (tmp_path / "labels.csv").write_text("id,family\n" + "".join(rows) + "P003,b\n")
    with pytest.raises(DataError, match=r"labels.csv:10: id 'P003' appears twice in .*labels.csv "
                                        r"\(first at .*labels.csv:5\)"):
        fit(config("classify", data), tmp_path / "run2")


def test_per_residue_tags_with_other_ids_or_lengths_are_named(tmp_path):
    train = proteins(6)
    (tmp_path / "train.fasta").write_text(fasta(train))
    tags = [(p, "H" * len(s)) for p, s in train]
    (tmp_path / "ss.fasta").write_text("".join(f">{p}\n{t}\n" for p, t in tags[:4]) + ">Z9\nHH\n")
    data = {"path": str(tmp_path / "train.fasta"), "tags_path": str(tmp_path / "ss.fasta")}
    with pytest.raises(DataError, match=r"record 5 \(P004\): .*ss.fasta has no entry for 'P004'; "
                                        r"2 of 6 records have none \('P004', 'P005'\), and its ids "
                                        r"that name no record here are: 'Z9'"):
        fit(config("tag", data), tmp_path / "run")
    tags[1] = (tags[1][0], tags[1][1] + "C")
    (tmp_path / "ss.fasta").write_text("".join(f">{p}\n{t}\n" for p, t in tags))
    n = len(train[1][1])
    with pytest.raises(DataError, match=rf"record 2 \(P001\): its tags in .*ss.fasta are {n + 1} "
                                        rf"long, the sequence {n}"):
        fit(config("tag", data), tmp_path / "run")


# -- 4. seqlab finetune --from ------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A protein masked-LM run (lstm with a feed-forward layer), shared read-only."""
    root = tmp_path_factory.mktemp("base")
    (root / "p.fasta").write_text(fasta(proteins(24)))
    fit(config("masked_lm", {"path": str(root / "p.fasta")}), root / "run")
    return root / "run"


def classify_yaml(base: Path, tmp_path: Path, **changes) -> Path:
    data = {"path": str(base.parent / "p.fasta"), "header_label": r"fam=(\w)"}
    path = tmp_path / "classify.yaml"
    path.write_text(yaml.safe_dump(config("classify", data, **changes)))
    return path


def test_finetune_from_a_run_that_is_missing_or_not_a_run(base, tmp_path):
    cfg = classify_yaml(base, tmp_path)
    message = one_line_error(*cli("finetune", cfg, "--from", tmp_path / "nope", "--out", tmp_path / "a"))
    assert message == f"run directory {tmp_path / 'nope'} does not exist"
    (tmp_path / "empty").mkdir()
    message = one_line_error(*cli("finetune", cfg, "--from", tmp_path / "empty", "--out", tmp_path / "b"))
    assert message == f"{tmp_path / 'empty'} is not a seqlab run directory: it has no config.yaml"


def test_finetune_from_a_run_whose_weights_are_missing_or_corrupt(base, tmp_path):
    cfg = classify_yaml(base, tmp_path)
    gone = Path(shutil.copytree(base, tmp_path / "gone"))
    (gone / "model.safetensors").unlink()
    message = one_line_error(*cli("finetune", cfg, "--from", gone, "--out", tmp_path / "a"))
    assert message == f"init.run: {gone} has no model.safetensors to initialise from"
    corrupt = Path(shutil.copytree(base, tmp_path / "corrupt"))
    weights = bytearray((corrupt / "model.safetensors").read_bytes())
    weights[-5] ^= 0xA5  # in the tensor data, which the checksum covers
    (corrupt / "model.safetensors").write_bytes(bytes(weights))
    message = one_line_error(*cli("finetune", cfg, "--from", corrupt, "--out", tmp_path / "b"))
    assert f"{corrupt / 'model.safetensors'} is corrupt" in message
    (corrupt / "model.safetensors").write_bytes(b"hello")
    message = one_line_error(*cli("finetune", cfg, "--from", corrupt, "--out", tmp_path / "c"))
    assert f"{corrupt / 'model.safetensors'} is truncated" in message


def test_finetune_refuses_a_tokenizer_other_than_the_base_runs(base, tmp_path):
    message = one_line_error(*cli("finetune", classify_yaml(base, tmp_path, tokenizer={"kind": "dna"}),
                                  "--from", base, "--out", tmp_path / "a"))
    assert message.startswith("the config's tokenizer (kind dna) is not the one the base run")
    assert f"(kind protein, 31 ids, {base / 'tokenizer.json'})" in message
    assert "leave tokenizer out of the config" in message
    kmer = RunConfig.from_dict(config("classify", {"path": str(base.parent / "p.fasta")},
                                      tokenizer={"kind": "kmer", "k": 4}))
    with pytest.raises(ConfigError, match=r"\(kind kmer, k=4\) is not the one .* \(kind protein"):
        seqlab.api.finetune_config(kmer, base)
    DNATokenizer().save(tmp_path / "dna.json")
    other = RunConfig.from_dict(config("classify", {"path": str(base.parent / "p.fasta")},
                                       tokenizer={"kind": "dna", "path": str(tmp_path / "dna.json")}))
    with pytest.raises(ConfigError, match=r"tokenizer.path .*dna.json: kind dna, soft_mask=False"):
        seqlab.api.finetune_config(other, base)


def test_init_run_in_the_config_refuses_another_tokenizer_too(base, tmp_path):
    # Not through `seqlab finetune`: init.run in the YAML, `seqlab train`, the same check.
    path = classify_yaml(base, tmp_path, tokenizer={"kind": "dna"}, init={"run": str(base)})
    message = one_line_error(*cli("train", path, "--out", tmp_path / "a"))
    assert message.startswith("the config's tokenizer (kind dna) is not the one the base run")
    seqlab.fit(classify_yaml(base, tmp_path, init={"run": str(base)}), tmp_path / "b")
    assert seqlab.load(tmp_path / "b").tokenizer.kind == "protein"  # the default: the base's


def test_finetune_takes_the_base_runs_tokenizer_when_the_config_names_none_or_the_same(base, tmp_path):
    # Documented (seqlab.tasks.init_tokenizer.check_base_tokenizer): the base's tokenizer is used.
    for name, tokenizer in [("default", {}), ("same", {"kind": "protein"})]:
        seqlab.finetune(classify_yaml(base, tmp_path, tokenizer=tokenizer), tmp_path / name,
                        from_run=base)
        pipeline = seqlab.load(tmp_path / name)
        assert pipeline.config.model.vocab_size == 31  # the base's protein ids, <mask> too


# -- 5. LoRA ------------------------------------------------------------------------------

def test_lora_on_a_mixer_without_projections(base, tmp_path, caplog):
    # With a feed-forward layer: the adapters go there, and a warning says the mixer has none.
    with caplog.at_level(logging.WARNING, logger="seqlab"):
        seqlab.finetune(classify_yaml(base, tmp_path), tmp_path / "ffn", from_run=base, mode="lora")
    assert any("lora: the lstm mixer has no Linear projections that lora.targets match; only "
               "down, up carry adapters" in r.getMessage() for r in caplog.records)
    # Without one: nothing to adapt, one line naming the targets and the Linears there are.
    (tmp_path / "p.fasta").write_text(fasta(proteins(16)))
    fit(config("masked_lm", {"path": str(tmp_path / "p.fasta")}, model={"ffn": "none"}),
        tmp_path / "bare")
    cfg = tmp_path / "bare.yaml"
    cfg.write_text(yaml.safe_dump(config("classify", {"path": str(tmp_path / "p.fasta"),
                                                      "header_label": r"fam=(\w)"},
                                         model={"ffn": "none"})))
    message = one_line_error(*cli("finetune", cfg, "--from", tmp_path / "bare", "--mode", "lora",
                                  "--out", tmp_path / "lora"))
    assert message.startswith("lora.targets ['*.mixer.q_proj'") and \
        "match no Linear module of this model; its Linear modules: head.proj" in message
