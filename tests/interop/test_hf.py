"""Hugging Face interop: small random GPT-2, Llama and Mamba models built with
``transformers`` and saved locally import with equal logits; gpt- and llama-shaped runs
export to directories ``from_pretrained`` loads with equal logits; bad input is named."""

import json

import pytest
import torch

import seqlab
from seqlab import cli
from seqlab.config import RunConfig
from seqlab.errors import CheckpointError, ConfigError
from seqlab.infer.generate import SamplingConfig
from seqlab.interop.hf import export_hf, import_hf

transformers = pytest.importorskip("transformers")
VOCAB = 97


def hf_models():
    t = transformers
    return {
        "gpt2": lambda: t.GPT2LMHeadModel(t.GPT2Config(
            vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
            bos_token_id=96, eos_token_id=96)),
        "llama": lambda: t.LlamaForCausalLM(t.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rope_theta=5000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2)),
        "mamba": lambda: t.MambaForCausalLM(t.MambaConfig(
            vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2, conv_kernel=4,
            expand=2, eos_token_id=0)),
    }


@pytest.mark.parametrize("kind", ["gpt2", "llama", "mamba"])
def test_import_gives_the_checkpoints_logits(kind, tmp_path):
    torch.manual_seed(0)
    model = hf_models()[kind]().eval()
    model.save_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "run")
    pipeline = seqlab.load(tmp_path / "run")
    ids = torch.randint(0, VOCAB, (3, 24))
    with torch.no_grad():
        theirs, ours = model(ids).logits, pipeline.model(ids).logits
    assert (theirs - ours).abs().max().item() < 1e-5
    # Generation follows the checkpoint too: greedy continuation equals HF's greedy one.
    prompt = ids[:1, :5]
    with torch.no_grad():
        expected = model.generate(prompt, max_new_tokens=6, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)[0, 5:].tolist()
    new = pipeline.generate_ids([prompt[0].tolist()], max_new_tokens=[6], seeds=[0],
                                sampling=SamplingConfig(greedy=True))[0]
    eos = pipeline.tokenizer.eos_id
    assert new == expected[:expected.index(eos)] if eos in expected else new == expected
    config = RunConfig.from_yaml(tmp_path / "run" / "config.yaml")
    assert config.model.vocab_size == VOCAB and pipeline.tokenizer.vocab_size == VOCAB


def seqlab_run(tmp_path, preset: str, **model):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world, the quick brown fox. " * 30)
    config = RunConfig.from_dict({
        "model": {"preset": preset, "d_model": 32, "n_layers": 2, "n_heads": 4,
                  "context_length": 32, **model},
        "data": {"path": str(corpus)},
        "train": {"steps": 3, "batch_size": 4, "lr": 1e-2, "warmup_steps": 1, "eval_every": 3,
                  "eval_batches": 1, "progress": False, "num_threads": 1}})
    seqlab.fit(config, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("preset, model", [
    ("gpt-tiny", {"activation": "gelu_tanh"}),
    ("llama-tiny", {"n_kv_heads": 2, "tie_embeddings": False, "rope_base": 500.0}),
    ("llama-tiny", {}),
])
def test_export_loads_in_transformers_with_equal_logits_and_imports_back(preset, model, tmp_path):
    run = seqlab_run(tmp_path, preset, **model)
    export_hf(run, tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ours = seqlab.load(run)
    ids = torch.randint(0, ours.config.model.vocab_size, (2, 20))
    with torch.no_grad():
        assert (theirs(ids).logits - ours.model(ids).logits).abs().max().item() < 1e-5
    import_hf(tmp_path / "hf", tmp_path / "back")
    back = seqlab.load(tmp_path / "back")
    with torch.no_grad():
        assert torch.allclose(back.model(ids).logits, ours.model(ids).logits, atol=1e-6)


def test_a_run_that_is_neither_shape_is_refused_with_reasons(tmp_path):
    run = seqlab_run(tmp_path, "mamba-tiny")
    with pytest.raises(ConfigError, match=r"cannot be exported to Hugging Face: every layer must "
                                          r"be causal attention \(mixers: mamba\)"):
        export_hf(run, tmp_path / "hf")


def test_unsupported_or_broken_checkpoints_are_named(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        import_hf(hf, tmp_path / "run")
    (hf / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ConfigError, match="model_type 't5' cannot be imported; supported: bert, "
                                          "gpt2, llama, mamba"):
        import_hf(hf, tmp_path / "run")
    torch.manual_seed(0)
    hf_models()["gpt2"]().save_pretrained(hf)
    (hf / "model.safetensors").rename(hf / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickled weights .* never unpickles"):
        import_hf(hf, tmp_path / "run")
    (hf / "pytorch_model.bin").unlink()
    hf_models()["gpt2"]().save_pretrained(hf)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(CheckpointError, match="the weights have no tensor 'transformer.h.2.ln_1.weight'"):
        import_hf(hf, tmp_path / "run")


def test_the_commands(tmp_path, capsys):
    torch.manual_seed(0)
    hf_models()["llama"]().save_pretrained(tmp_path / "hf")
    assert cli.main(["hf", "import", str(tmp_path / "hf"), "--out", str(tmp_path / "run"), "-q"]) == 0
    assert cli.main(["hf", "export", str(tmp_path / "run"), "--out", str(tmp_path / "again"),
                     "-q"]) == 0
    assert (tmp_path / "again" / "model.safetensors").is_file()
    assert cli.main(["hf", "import", str(tmp_path / "hf"), "--out", str(tmp_path / "run"), "-q"]) == 2
    assert "is not empty" in capsys.readouterr().err


BERT_VOCAB = ["[PAD]"] + [f"w{i}" for i in range(1, 90)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
    [f"x{i}" for i in range(94, VOCAB)]


def test_a_bert_masked_lm_imports_with_equal_logits_and_fills_masks(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=40, type_vocab_size=2)
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():  # token-type and LayerNorm weights away from their init
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "token_type" in name or name.endswith("predictions.bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
    import_hf(tmp_path / "hf", tmp_path / "run")
    pipeline = seqlab.load(tmp_path / "run")
    assert pipeline.config.task == "masked_lm" and pipeline.tokenizer.mask_id == 93
    ids = torch.randint(0, VOCAB, (3, 16))
    mask = torch.ones(3, 16, dtype=torch.bool)
    mask[1, 11:] = False  # a padded row: HF's attention_mask, seqlab's padding_mask
    with torch.no_grad():
        theirs = model(ids, attention_mask=mask.long()).logits
        ours = pipeline.model(ids, padding_mask=mask).logits
    assert (theirs - ours)[mask].abs().max().item() < 1e-5
    filled = pipeline.fill_mask("91 5 <mask> 7 92", top_k=3)[0]
    with torch.no_grad():
        probs = model(torch.tensor([[91, 5, 93, 7, 92]])).logits[0, 2].softmax(-1)
    probs[[0, 91, 92, 93]] = 0  # seqlab never proposes special tokens
    assert [o["id"] for o in filled] == probs.topk(3).indices.tolist()


def test_a_bert_without_its_vocabulary_or_head_is_refused(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=4, intermediate_size=64)
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    with pytest.raises(CheckpointError, match=r"special tokens \[PAD\], \[CLS\], \[SEP\], \[MASK\] "
                                              "are not in a vocab.txt"):
        import_hf(tmp_path / "mlm", tmp_path / "run")
    transformers.BertModel(config).save_pretrained(tmp_path / "plain")
    with pytest.raises(CheckpointError, match="no masked-LM head"):
        import_hf(tmp_path / "plain", tmp_path / "run2")


def test_linear_rope_scaling_imports_and_exports_with_equal_logits(tmp_path):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, eos_token_id=2,
        rope_scaling={"rope_type": "linear", "factor": 4.0})).eval()
    model.save_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "run")
    pipeline = seqlab.load(tmp_path / "run")
    assert (pipeline.config.model.rope_scaling, pipeline.config.model.rope_factor) == ("linear", 4.0)
    ids = torch.randint(0, VOCAB, (2, 40))
    with torch.no_grad():
        assert (model(ids).logits - pipeline.model(ids).logits).abs().max().item() < 1e-5
    export_hf(tmp_path / "run", tmp_path / "back")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert (again(ids).logits - pipeline.model(ids).logits).abs().max().item() < 1e-5
