"""The seq2seq objective end to end: a small encoder-decoder learns to reverse words,
its evaluation decodes and scores, ``seqlab.load(...).translate`` and ``seqlab
translate`` give the outputs with their scores, and bad requests get clear errors."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import seqlab
from seqlab.cli import main
from seqlab.config import RunConfig
from seqlab.errors import ConfigError, DataError
from seqlab.models.heads import IGNORE
from seqlab.tasks.seq2seq_metrics import edit_distance, text_scores

from .conftest import tiny


def reversal_config(folder, **train):
    rng = random.Random(0)
    words = {"".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 6))) for _ in range(900)}
    (folder / "pairs.tsv").write_text("source\ttarget\n" + "".join(
        f"{w}\t{w[::-1].upper()}\n" for w in sorted(words)))
    return RunConfig.from_dict({
        "task": "seq2seq", "seed": 0, "tokenizer": {"kind": "char"},
        "task_options": {"eval_decode": 64, "bleu_tokenize": "char"},
        "model": {"mixer": "attention", "d_model": 64, "n_layers": 2, "n_heads": 4,
                  "context_length": 16, "encoder": {"n_layers": 2}},
        "data": {"source": "parallel", "path": str(folder / "pairs.tsv")},
        "train": {"steps": 400, "batch_size": 32, "lr": 3e-3, "warmup_steps": 20,
                  "eval_every": 400, "progress": False, "num_threads": 1, **train}})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reverse")
    result = seqlab.fit(reversal_config(folder), folder / "run")
    return folder / "run", result


def test_a_small_encoder_decoder_learns_to_reverse_words(run):
    _, result = run
    assert result.metrics["exact"] >= 0.5, result.metrics
    assert result.metrics["chrf"] > 50 and result.metrics["wer"] < 0.5


def test_translate_gives_ranked_outputs_with_the_scores_beam_search_gave(run):
    pipeline = seqlab.load(run[0])
    [outputs] = pipeline.translate(["abcde"], beam=4, n_best=3)
    assert len(outputs) == 3 and outputs[0].text == "EDCBA"
    assert [o.score for o in outputs] == sorted((o.score for o in outputs), reverse=True)
    assert outputs[0].score == pytest.approx(outputs[0].logprob / 6)  # 5 letters and <eos>
    greedy = pipeline.translate(["abcde", "hg"])
    assert [g[0].text for g in greedy] == ["EDCBA", "GH"]
    with pytest.raises(DataError, match=r"input 1 \(''\): the source is empty"):
        pipeline.translate(["ab", ""])
    with pytest.raises(DataError, match="the source is 20 tokens long; this model reads at most 16"):
        pipeline.translate(["a" * 20])
    with pytest.raises(ValueError, match="n_best must be between 1 and the beam"):
        pipeline.translate(["ab"], beam=2, n_best=3)
    with pytest.raises(ConfigError, match="sampling draws one output"):
        pipeline.translate(["ab"], temperature=1.0, beam=2)


def test_the_translate_command_prints_n_best_lists_and_writes_jsonl(run, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("abc\nhgf\n")
    assert main(["translate", str(run[0]), "--input", "abc", "-q"]) == 0
    assert capsys.readouterr().out.strip() == "CBA"
    assert main(["translate", str(run[0]), "--input", str(tmp_path / "in.txt"), "--beam", "3",
                 "--n-best", "2", "-q"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [(s, r, t) for s, r, t, _ in lines[::2]] == [("abc", "1", "CBA"), ("hgf", "1", "FGH")]
    assert main(["translate", str(run[0]), "--input", str(tmp_path / "in.txt"), "--out",
                 str(tmp_path / "out.jsonl"), "-q"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["outputs"][0]["text"] for r in rows] == ["CBA", "FGH"]
    (tmp_path / "bad.txt").write_text("abc\n\nhgf\n")
    assert main(["translate", str(run[0]), "--input", str(tmp_path / "bad.txt"), "--out",
                 str(tmp_path / "o.txt"), "-q"]) == 2
    assert "bad.txt:2: the source line is empty" in capsys.readouterr().err


def test_the_training_loss_is_label_smoothed_cross_entropy_over_real_target_tokens():
    model = tiny()
    model.label_smoothing = 0.1
    src = torch.randint(3, 12, (2, 5))
    dec = torch.randint(3, 12, (2, 4))
    targets = torch.randint(3, 12, (2, 4))
    targets[1, 2:] = IGNORE
    result = model.loss(src, targets, decoder_inputs=dec)
    logp = model.teacher_forced(src, dec).log_softmax(-1)
    want = 0.0
    for b, t in [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]:
        want += 0.9 * -logp[b, t, targets[b, t]] + 0.1 * -logp[b, t].mean()
    assert float(result.count) == 6
    assert float(result.total.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    plain = F.cross_entropy(logp.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    assert float(result.total.detach()) != pytest.approx(float(plain.detach()))


def _naive_distance(a, b):
    if not a or not b:
        return len(a) + len(b)
    return min(_naive_distance(a[1:], b) + 1, _naive_distance(a, b[1:]) + 1,
               _naive_distance(a[1:], b[1:]) + (a[0] != b[0]))


@given(st.text("abc", max_size=6), st.text("abc", max_size=6))
def test_edit_distance_matches_the_recursive_definition(a, b):
    assert edit_distance(a, b) == _naive_distance(a, b)


def test_text_scores_of_perfect_and_partly_wrong_outputs():
    refs = ["the cat sat on the mat", "a b c"]
    perfect = text_scores(refs, refs, [[1, 2, 3], [4]], [[1, 2, 3], [4]])
    assert perfect == pytest.approx({"bleu": 100.0, "chrf": 100.0, "exact": 1.0, "ter": 0.0, "wer": 0.0,
                                     "cer": 0.0})
    wrong = text_scores(["the cat sat on a mat", "a b c"], refs, [[1, 2, 9], [4]], [[1, 2, 3], [4]])
    assert wrong["exact"] == 0.5 and wrong["ter"] == pytest.approx(1 / 4)
    assert wrong["wer"] == pytest.approx(1 / 9) and 0 < wrong["bleu"] < 100
    assert wrong["cer"] == pytest.approx(3 / 27)  # "the" -> "a": 3 edits over 27 characters


def test_selecting_by_a_decoded_metric_needs_decoding(tmp_path):
    config = reversal_config(tmp_path, best_metric="wer")
    with pytest.raises(ConfigError, match="needs decoded outputs; task_options.eval_decode is 0"):
        seqlab.fit(config.replace(["task_options.eval_decode=0"]), tmp_path / "run")


def test_source_and_target_can_have_tokenizers_of_their_own(tmp_path):
    """Sources read by a char tokenizer learnt from the sources alone, targets by bytes:
    two embedding tables, both tokenizers kept in the run and used by translate."""
    config = reversal_config(tmp_path, steps=4, eval_every=4).replace(
        ["task_options.target_tokenizer={kind: byte}", "task_options.eval_decode=8"])
    result = seqlab.fit(config, tmp_path / "run")
    assert "bleu" in result.metrics
    pipeline = seqlab.load(tmp_path / "run")
    model = pipeline.model
    assert pipeline.tokenizer.kind == "char" and pipeline.objective.target_tokenizer.kind == "byte"
    assert model.encoder.embed.num_embeddings == pipeline.tokenizer.vocab_size == 12  # 4 + 8 letters
    assert model.decoder.embed.num_embeddings == pipeline.objective.target_tokenizer.vocab_size
    assert model.encoder.embed.weight is not model.decoder.embed.weight
    assert (tmp_path / "run" / "target_tokenizer.json").is_file()
    [[out]] = pipeline.translate(["abc"], max_length=6)
    assert isinstance(out.text, str)
    again = pipeline.evaluate(max_batches=1)
    assert again["val_loss"] > 0
    from seqlab.data.batch import Batch
    from seqlab.export import ExportedModel, export_run

    export_run(tmp_path / "run", tmp_path / "onnx")  # sources drawn from the source vocabulary
    source = torch.tensor([[4, 5, 6], [7, 8, 9]])
    want = pipeline.objective.decode_batch(model, Batch(source), max_length=6)
    eos = pipeline.objective.target_tokenizer.eos_id
    assert ExportedModel(tmp_path / "onnx").translate(source, 6) == [
        [t for t in h[0].tokens if t != eos] for h in want]
    with pytest.raises(ConfigError, match="task_options.target_tokenizer has unknown keys size"):
        reversal_config(tmp_path).replace(["task_options.target_tokenizer={kind: bpe, size: 3}"])


def test_a_run_with_two_tokenizers_resumes_exactly(tmp_path):
    from seqlab.train.checkpoint import CheckpointManager
    from seqlab.train.trainer import Trainer

    config = reversal_config(tmp_path, steps=4, eval_every=2).replace(
        ["task_options.target_tokenizer={kind: byte}", "task_options.eval_decode=4"])
    Trainer(config, tmp_path / "straight").fit()
    Trainer(config, tmp_path / "resumed").fit(until_step=2)
    Trainer(config, tmp_path / "resumed", resume=True).fit()
    a, b = (CheckpointManager(tmp_path / r / "trainer").load_latest().model
            for r in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_translate_endpoint_refuses_what_it_cannot_do(run):
    from starlette.testclient import TestClient

    from seqlab.serve.app import Service, create_app

    with TestClient(create_app(Service(run[0]))) as client:
        ok = client.post("/v1/translate", json={"texts": ["abc"], "beam": 3, "n_best": 2})
        assert ok.status_code == 200
        assert [o["text"] for o in ok.json()["translations"][0]][0] == "CBA"
        for body, status, message in (
                ({"texts": []}, 422, "texts is empty"),
                ({"texts": ["ab"], "beam": 2, "n_best": 3}, 422, "n_best 3 is more than the beam (2)"),
                ({"texts": ["ab", "a" * 30]}, 422, "texts[1]: the source is 30 tokens long"),
                ({"texts": ["ab"], "max_length": 100000}, 413, "over this server's cap"),
                ({"texts": ["ab"], "temperature": 1.0, "beam": 2}, 422, "sampling draws one output"),
                ({"texts": ["ab"], "beams": 2}, 422, "beams")):
            response = client.post("/v1/translate", json=body)
            assert response.status_code == status, response.text
            assert message in response.text
