"""``seqlab export``: ONNX (run by ONNX Runtime) and torch.export graphs with the
streaming state as inputs and outputs. Parity with PyTorch eager: the prompt's logits,
then twenty decoding steps fed back through the exported state, at a batch size and
prompt length other than the ones traced; a clear error for what cannot export."""

import json

import pytest
import torch

import seqlab
from seqlab import cli
from seqlab.config import RunConfig
from seqlab.errors import ConfigError
from seqlab.export import ExportedModel, export_run
from seqlab.infer.generate import SamplingConfig

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

MODELS = {
    "gpt": {"preset": "gpt-tiny"},
    "lstm-lm": {"preset": "lstm-lm-tiny", "d_model": 32, "mixer_options": {"lstm": {"num_layers": 2}}},
    "mamba": {"preset": "mamba-tiny"},
    "hybrid": {"mixer": ["window_attention", "gru", "linear_attention"], "n_layers": 3,
               "position": "rope", "mixer_options": {"window_attention": {"window": 4}}},
}


def train(tmp_path, model: dict, task="causal_lm", data=None):
    tmp_path.mkdir(exist_ok=True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    config = RunConfig.from_dict({
        "task": task, "seed": 0,
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 4, "context_length": 64, **model},
        "data": data or {"path": str(corpus)},
        "train": {"steps": 2, "batch_size": 2, "eval_every": 2, "eval_batches": 1,
                  "progress": False, "num_threads": 1}})
    seqlab.fit(config, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_prefill_and_twenty_steps_match_pytorch(name, fmt, tmp_path):
    run = train(tmp_path, MODELS[name])
    manifest = export_run(run, tmp_path / "out", fmt=fmt)
    assert json.loads((tmp_path / "out" / "export.json").read_text()) == manifest
    exported = ExportedModel(tmp_path / "out")
    model = seqlab.load(run).model
    ids = torch.randint(0, 259, (3, 5))  # traced with batch 2 and 3 prompt tokens
    with torch.no_grad():
        ref = model(ids, model.init_state(3))
        logits, state = exported.prefill(ids)
        worst = (logits - ref.logits).abs().max().item()
        ref_state, token = ref.state, ref.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(20):
            ref = model(token, ref_state)
            logits, state = exported.step(token, state)
            worst = max(worst, (logits - ref.logits).abs().max().item())
            ref_state, token = ref.state, ref.logits[:, -1].argmax(-1, keepdim=True)
    assert worst < 1e-4, worst
    has_prefill = manifest["graphs"]["prefill"] is not None
    # Recurrent kernels unroll over time when traced, and the chunked scan picks its chunk
    # from the shapes: those models step through the prompt instead.
    assert has_prefill == (name == "gpt")


def test_a_bidirectional_classifier_exports_its_forward_pass(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": t[0]}) + "\n"
                            for t in ["abc", "bca", "cab", "aab", "bbc", "cca"] * 3))
    examples = {"source": "examples", "path": str(data), "val_fraction": 0.3}
    run = train(tmp_path / "gru", {"mixer": ["attention", "gru"], "causal": False, "position": "rope"},
                task="classify", data=examples)
    with pytest.raises(ConfigError, match=r"forward graph .*\(mixers: attention, gru\): .*unrolls "
                                          r"over time when traced"):
        export_run(run, tmp_path / "gru-out", fmt="onnx")
    run = train(tmp_path, {"mixer": "attention", "causal": False, "position": "rope"},
                task="classify", data=examples)
    manifest = export_run(run, tmp_path / "out", fmt="onnx")
    assert list(k for k, v in manifest["graphs"].items() if v) == ["forward"]
    model = seqlab.load(run).model
    ids = torch.randint(0, 7, (4, 6))
    with torch.no_grad():
        assert torch.allclose(ExportedModel(tmp_path / "out").forward(ids), model(ids).logits,
                              atol=1e-5)


def test_what_cannot_export_is_named_with_the_reason(tmp_path):
    run = train(tmp_path, {"mixer": "s4d", "position": "none"})
    with pytest.raises(ConfigError, match=r"cannot export the step graph of this model \(mixers: "
                                          r"s4d\): .*ONNX has no complex numbers"):
        export_run(run, tmp_path / "onnx", fmt="onnx")
    assert export_run(run, tmp_path / "pt2", fmt="torch-export")["graphs"]["step"]
    with pytest.raises(ConfigError, match="export format 'tflite' is not one of onnx, torch-export"):
        export_run(run, tmp_path / "x", fmt="tflite")


def test_the_command(tmp_path, capsys):
    run = train(tmp_path, MODELS["gpt"])
    assert cli.main(["export", str(run), "--format", "torch-export", "-q"]) == 0
    assert "prefill, step" in capsys.readouterr().out
    greedy = ExportedModel(run / "export-torch-export").greedy(torch.tensor([[258, 116, 104]]), 8)
    expected = seqlab.load(run).generate_ids([[258, 116, 104]], max_new_tokens=[8], seeds=[0],
                                             sampling=SamplingConfig(greedy=True))
    assert greedy[0, :len(expected[0])].tolist() == expected[0]
