"""Trainer hooks, one real test each: initialising from a saved run with some tensors,
frozen parameters, parameter groups with their own learning rates, a loss term added by
a hook, extra evaluators; and exact gradient averaging, exact resume of example data."""

import importlib.util
import json
import struct

import pytest
import torch

import seqlab
from seqlab.config import RunConfig
from seqlab.errors import CheckpointError, ConfigError
from seqlab.train.checkpoint import CheckpointManager
from seqlab.train.hooks import ExtraEvaluators, TrainerHook
from seqlab.train.trainer import Trainer
from seqlab.weights_file import load_weights


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    rows = [{"text": ("ab" if i % 2 else "cd") * (1 + i % 7), "label": str(i % 2)} for i in range(60)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "train.jsonl"


def config(task, examples, **sections):
    data = {"task": task, "seed": 0,
            "model": {"mixer": "gru", "position": "none", "d_model": 16, "n_layers": 2,
                      "context_length": 32, "causal": task != "masked_lm"},
            "data": {"source": "examples", "path": str(examples), "bucket": True},
            "train": {"steps": 4, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1,
                      "eval_every": 4, "progress": False, "num_threads": 1}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return RunConfig.from_dict(data)


@pytest.fixture(scope="module")
def pretrained(examples, tmp_path_factory):
    run = tmp_path_factory.mktemp("pre") / "run"
    seqlab.fit(config("masked_lm", examples), run)
    return run


def test_init_from_a_run_takes_the_backbone_and_reports_it(examples, pretrained, tmp_path):
    cfg = config("classify", examples, model={"causal": False},
                 init={"run": str(pretrained), "exclude": ["head.*"]})
    trainer = Trainer(cfg, tmp_path / "run")
    trainer._setup()
    saved, _ = load_weights(pretrained / "model.safetensors")
    own = dict(trainer.model.state_dict())
    backbone = [k for k in saved if k.startswith("backbone.")]
    assert backbone and all(torch.equal(own[k], saved[k]) for k in backbone)
    report = json.loads((tmp_path / "run" / "init.json").read_text())
    assert sorted(report["loaded"]) == sorted(backbone)
    assert set(report["new"]) == {k for k in own if k.startswith("head.")}
    assert {k for k, why in report["dropped"].items() if why == "excluded"} == \
        {k for k in saved if k.startswith("head.")}
    # the pre-trained run's tokenizer (with <mask>) comes along, so ids mean the same
    assert trainer.objective.tokenizer.mask_id is not None


def test_init_names_a_missing_run_and_a_pattern_that_matches_nothing(examples, tmp_path, pretrained):
    with pytest.raises(CheckpointError, match="init.run: .*does not exist"):
        Trainer(config("classify", examples, init={"run": str(tmp_path / "nowhere")}),
                tmp_path / "a").fit()
    with pytest.raises(ConfigError, match="init.exclude: pattern 'hed.\\*' matches no parameter"):
        Trainer(config("classify", examples, model={"causal": False},
                       init={"run": str(pretrained), "exclude": ["hed.*"]}), tmp_path / "b").fit()


def test_frozen_parameters_do_not_move(examples, tmp_path):
    cfg = config("classify", examples, train={"freeze": ["backbone.blocks.0.*", "backbone.embed.*"]})
    trainer = Trainer(cfg, tmp_path / "run")
    trainer._setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer._loop(seqlab.train.trainer.TrainResult(tmp_path, 0), None)
    after = trainer.model.state_dict()
    frozen = [k for k in before if k.startswith(("backbone.blocks.0.", "backbone.embed."))]
    moved = [k for k in before if k.startswith(("backbone.blocks.1.", "head."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in moved)
    with pytest.raises(ConfigError, match="train.freeze: pattern 'backbone.blocks.9.\\*' matches no"):
        Trainer(config("classify", examples, train={"freeze": ["backbone.blocks.9.*"]}),
                tmp_path / "other").fit()


def test_parameter_groups_get_their_own_learning_rates(examples, tmp_path):
    groups = [{"params": ["head.*"], "lr": 0.05}, {"params": ["backbone.blocks.0.*"], "lr_scale": 0.0001}]
    trainer = Trainer(config("classify", examples, train={"param_groups": groups, "warmup_steps": 0,
                                                          "min_lr_ratio": 1.0}), tmp_path / "run")
    trainer._setup()
    trainer._train_step()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    lrs = {names[id(p)]: g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert lrs["head.proj.weight"] == pytest.approx(0.05)
    assert lrs["backbone.blocks.0.mixer.rnn.weight_hh_l0"] == pytest.approx(1e-6)
    assert lrs["backbone.blocks.1.mixer.rnn.weight_hh_l0"] == pytest.approx(1e-2)


def test_a_loss_term_from_a_hook_pulls_toward_reference_weights(examples, pretrained, tmp_path):
    def drift(penalty):
        cfg = config("classify", examples, model={"causal": False},
                     init={"run": str(pretrained), "exclude": ["head.*"], "penalty": penalty},
                     train={"steps": 8, "lr": 3e-2})
        seqlab.fit(cfg, tmp_path / f"run{penalty}")
        ref, _ = load_weights(pretrained / "model.safetensors")
        new, _ = load_weights(tmp_path / f"run{penalty}" / "trainer" / "step-00000008" / "model.safetensors")
        return sum(float((new[k] - ref[k]).square().sum()) for k in ref if k.startswith("backbone."))

    assert drift(100.0) < 0.2 * drift(0.0)


def test_extra_evaluators_are_logged_under_their_names(examples, tmp_path):
    calls = []

    def count_parameters(model):
        calls.append(1)
        return {"params": float(sum(p.numel() for p in model.parameters()))}

    cfg = config("classify", examples, data={"eval_sets": {"again": str(examples)}})
    result = seqlab.fit(cfg, tmp_path / "run", hooks=[ExtraEvaluators({"size": count_parameters})])
    assert calls and result.metrics["size/params"] > 0
    assert {"again/loss", "again/accuracy", "again/macro_f1"} <= set(result.metrics)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("again/accuracy" in r for r in logged)


def test_gradient_accumulation_averages_exactly_over_padded_micro_batches(examples, tmp_path):
    """One step with 2 micro-batches equals one step over their union: the trainer divides
    the summed gradients by the total count, whatever the padding in each micro-batch."""

    class Record(TrainerHook):
        def loss_term(self, trainer):
            self.grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}

    hook = Record()
    trainer = Trainer(config("tag", examples, data={"label_field": "text", "bucket": False},
                             train={"grad_accum": 2, "grad_clip": 0.0}), tmp_path / "run", hooks=[hook])
    trainer._setup()
    micro = [trainer.objective.train_batch(0, m) for m in range(2)]
    assert micro[0].padding_mask is not None or micro[1].padding_mask is not None
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer._train_step()
    trainer.model.load_state_dict(before)  # the reference gradients are taken at the same weights
    from seqlab.data.batch import IGNORE, Batch, pad

    rows, tags = [], []
    for b in micro:
        for i in range(b.size):
            n = int(b.padding_mask[i].sum()) if b.padding_mask is not None else b.inputs.shape[1]
            rows.append(b.inputs[i, :n])
            tags.append(b.targets[i, :n])
    inputs, mask = pad([r.numpy() for r in rows], value=0)
    targets, _ = pad([t.numpy() for t in tags], value=IGNORE)
    whole = Batch(inputs.long(), targets.long(), mask)
    trainer.model.zero_grad()
    result = trainer.objective.loss(trainer.model, whole)
    (result.total / result.count).backward()
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(hook.grads[name], p.grad, atol=1e-6, rtol=1e-5)


def test_exact_resume_with_bucketed_examples(examples, tmp_path):
    cfg = config("classify", examples, train={"steps": 8, "grad_accum": 2, "eval_every": 4})
    Trainer(cfg, tmp_path / "once").fit()
    Trainer(cfg, tmp_path / "twice").fit(until_step=3)
    Trainer(cfg, tmp_path / "twice", resume=True).fit()
    a = CheckpointManager(tmp_path / "once" / "trainer").load_latest().model
    b = CheckpointManager(tmp_path / "twice" / "trainer").load_latest().model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_takes_rates_from_the_config_and_refuses_other_groups(examples, tmp_path):
    cfg = config("classify", examples, train={"steps": 6, "eval_every": 3})
    Trainer(cfg, tmp_path / "run").fit(until_step=3)
    faster = Trainer(cfg.replace(["train.lr=0.05"]), tmp_path / "run", resume=True)
    faster._setup()
    assert {g["base_lr"] for g in faster.optimizer.param_groups} == {0.05}
    grouped = cfg.replace({"train.param_groups": [{"params": ["head.*"], "lr": 0.1}]})
    with pytest.raises(ConfigError, match="optimizer does not fit this config's parameter groups"):
        Trainer(grouped, tmp_path / "run", resume=True).fit()


def test_layer_decay_scales_each_layers_rate_by_its_distance_from_the_head(examples, tmp_path):
    groups = [{"params": ["head.*"], "lr": 0.05}]
    trainer = Trainer(config("classify", examples, train={"layer_decay": 0.5, "param_groups": groups}),
                      tmp_path / "run")
    trainer._setup()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    lrs = {names[id(p)]: g["base_lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert lrs["backbone.embed.weight"] == pytest.approx(1e-2 * 0.5 ** 3)
    assert lrs["backbone.blocks.0.mixer.rnn.weight_hh_l0"] == pytest.approx(1e-2 * 0.5 ** 2)
    assert lrs["backbone.blocks.1.mixer.rnn.weight_hh_l0"] == pytest.approx(1e-2 * 0.5)
    assert lrs["backbone.norm.weight"] == pytest.approx(1e-2)
    assert lrs["head.proj.weight"] == pytest.approx(0.05)  # its own group's rate, at the top
    with pytest.raises(ConfigError, match=r"train.layer_decay must be in \(0, 1\]"):
        config("classify", examples, train={"layer_decay": 1.5})


@pytest.mark.parametrize("mode", ["full", "frozen"])
def test_finetune_from_a_run(examples, pretrained, tmp_path, mode):
    result = seqlab.finetune(config("classify", examples, model={"causal": False}), tmp_path / "run",
                             from_run=pretrained, mode=mode)
    assert "accuracy" in result.metrics
    before, _ = load_weights(pretrained / "model.safetensors")
    after, _ = load_weights(tmp_path / "run" / "model.safetensors")
    moved = [k for k in after if k.startswith("backbone.") and not torch.equal(after[k], before[k])]
    assert bool(moved) == (mode == "full")
    assert json.loads((tmp_path / "run" / "init.json").read_text())["run"] == str(pretrained)


def test_the_finetune_command(examples, pretrained, tmp_path, capsys):
    from seqlab import cli

    path = tmp_path / "classify.yaml"
    path.write_text(config("classify", examples, model={"causal": False}).to_yaml())
    assert cli.main(["finetune", str(path), "--from", str(pretrained), "--mode", "frozen",
                     "--out", str(tmp_path / "run"), "-q"]) == 0
    assert RunConfig.from_yaml(tmp_path / "run" / "config.yaml").train.freeze == ["backbone.*"]
    with pytest.raises(ConfigError, match="mode 'adapter' is not one of full, frozen, lora"):
        seqlab.finetune(config("classify", examples), tmp_path / "x", from_run=pretrained,
                        mode="adapter")
    assert cli.main(["finetune", str(path), "--from", str(tmp_path / "nowhere"), "-q"]) == 2


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_forgetting_of_the_pretraining_objective_is_measured(examples, pretrained, tmp_path, mode):
    result = seqlab.finetune(config("classify", examples, model={"causal": False},
                                    train={"lr": 5e-2, "steps": 6, "eval_every": 3}),
                             tmp_path / "run", from_run=pretrained, mode=mode)
    forgetting = result.metrics["pretrain/forgetting"]
    baseline = json.loads((tmp_path / "run" / "forgetting.json").read_text())["baseline"]
    assert result.metrics["pretrain/loss"] == pytest.approx(baseline + forgetting)
    assert "pretrain/masked_accuracy" in result.metrics
    if mode == "frozen":
        assert forgetting == 0.0  # the backbone did not move: nothing forgotten, exactly
    else:
        assert forgetting != 0.0
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "pretrain/forgetting" in r] == [3, 6]
    # The loss plot gains a second panel: the pre-training loss against its baseline.
    png = (tmp_path / "run" / "plots" / "loss.png").read_bytes()
    if importlib.util.find_spec("matplotlib"):
        width, height = struct.unpack(">II", png[16:24])
        assert height > 1.5 * width * 4 / 7


def test_forgetting_is_not_measured_without_the_pretraining_data(examples, pretrained, tmp_path,
                                                                 caplog_seqlab):
    import shutil

    shutil.copytree(pretrained, tmp_path / "base")
    stored = RunConfig.from_yaml(tmp_path / "base" / "config.yaml")
    (tmp_path / "base" / "config.yaml").write_text(
        stored.replace([f"data.path={tmp_path / 'gone.jsonl'}"]).to_yaml())
    result = seqlab.finetune(config("classify", examples, model={"causal": False}),
                             tmp_path / "run", from_run=tmp_path / "base")
    assert not any(k.startswith("pretrain/") for k in result.metrics)
    assert "forgetting is not measured" in caplog_seqlab.text
    off = seqlab.finetune(config("classify", examples, model={"causal": False},
                                 init={"measure_forgetting": False}),
                          tmp_path / "off", from_run=pretrained)
    assert not any(k.startswith("pretrain/") for k in off.metrics)


def test_replay_adds_the_pretraining_loss_on_its_own_batches(examples, pretrained, tmp_path):
    from seqlab.train.hooks import PretrainingObjective

    cfg = seqlab.api.finetune_config(config("classify", examples, model={"causal": False},
                                            init={"replay": 0.5}), pretrained)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer._setup()
    hook = next(h for h in trainer.hooks if isinstance(h, PretrainingObjective))
    trainer.step = 3
    term = hook.loss_term(trainer)
    batch = hook.objective.train_batch(3, 0)
    alone = hook.objective.loss(hook._probe(trainer.model), batch)
    assert term.item() == pytest.approx(0.5 * alone.total.item() / float(alone.count), rel=1e-6)
    term.backward()  # it reaches the backbone
    assert trainer.model.backbone.embed.weight.grad.abs().sum() > 0


def test_replay_and_ewc_resume_exactly(examples, pretrained, tmp_path):
    cfg = seqlab.api.finetune_config(config("classify", examples, model={"causal": False},
                                            init={"replay": 0.3, "ewc": 10.0, "ewc_batches": 2},
                                            train={"steps": 6, "eval_every": 3}), pretrained)
    Trainer(cfg, tmp_path / "straight").fit()
    Trainer(cfg, tmp_path / "resumed").fit(until_step=3)
    fisher, _ = load_weights(tmp_path / "resumed" / "ewc.safetensors")
    assert fisher and all(bool((f >= 0).all()) for f in fisher.values())
    assert any(bool(f.sum() > 0) for f in fisher.values())
    Trainer(cfg, tmp_path / "resumed", resume=True).fit()  # the Fisher is read, not recomputed
    a = CheckpointManager(tmp_path / "straight" / "trainer").load_latest().model
    b = CheckpointManager(tmp_path / "resumed" / "trainer").load_latest().model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_ewc_fisher_is_the_mean_of_per_example_squared_gradients(examples, pretrained, tmp_path):
    cfg = seqlab.api.finetune_config(config("classify", examples, model={"causal": False},
                                            init={"ewc": 1.0, "ewc_batches": 2},
                                            train={"steps": 1}), pretrained)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer._setup()
    hook = next(h for h in trainer.hooks if getattr(h, "fisher", None))
    probe, name = hook._probe(trainer.model), "backbone.embed.weight"
    param = dict(trainer.model.named_parameters())[name]
    squares, n = torch.zeros_like(param), 0
    for k in range(2):  # the reference: one example at a time, by hand
        batch = hook.objective.train_batch(k, 0)
        for i in range(batch.size):
            keep = slice(i, i + 1)
            result = hook.objective.loss(probe, type(batch)(
                batch.inputs[keep], batch.targets[keep],
                None if batch.padding_mask is None else batch.padding_mask[keep]))
            if float(result.count):
                (g,) = torch.autograd.grad(result.total / float(result.count), [param])
                squares += g.square()
                n += 1
    assert n > 2
    torch.testing.assert_close(hook.fisher[name], squares / n)
    batch = hook.objective.train_batch(0, 0)  # the square of a batch's mean gradient is far less
    mean = hook.objective.loss(probe, batch)
    (g,) = torch.autograd.grad(mean.total / float(mean.count), [param])
    assert float(g.square().sum()) < 0.5 * float(hook.fisher[name].sum())


def test_ewc_holds_the_backbone_closer_to_its_start(examples, pretrained, tmp_path):
    def drift(run):
        before, _ = load_weights(pretrained / "model.safetensors")
        after, _ = load_weights(run / "model.safetensors")
        return sum(float((after[k] - before[k]).square().sum()) for k in after
                   if k.startswith("backbone.") and k in before)

    base = config("classify", examples, model={"causal": False}, train={"lr": 3e-2, "steps": 8})
    seqlab.finetune(base, tmp_path / "plain", from_run=pretrained)
    seqlab.finetune(base.replace(["init.ewc=1000.0"]), tmp_path / "ewc", from_run=pretrained)
    assert drift(tmp_path / "ewc") < drift(tmp_path / "plain")
    with pytest.raises(ConfigError, match="init.penalty, init.replay and init.ewc need init.run"):
        Trainer(config("classify", examples, init={"ewc": 1.0}), tmp_path / "none")


def test_init_options_without_an_init_run_are_refused_when_training_starts(examples, tmp_path):
    with pytest.raises(ConfigError, match="init.include, init.exclude, init.penalty"):
        Trainer(config("classify", examples, init={"penalty": 1.0}), tmp_path / "run")
