"""Text to speech: the loss against a naive sum, synthesis through the state equals a
teacher-forced pass over what it made, stopping, seeded repeatability, refusals of text
the voice cannot say and of configs that cannot train a voice, and seqlab speak."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

import seqlab
from seqlab.config import RunConfig
from seqlab.datasets.speech_corpus import write_tone_corpus
from seqlab.errors import ConfigError, DataError


def config(folder, **changes) -> dict:
    cfg = {"task": "tts", "seed": 0, "tokenizer": {"kind": "char"},
           "task_options": {"frames_per_step": 2, "max_seconds": 0.6, "griffin_lim_iters": 8},
           "model": {"mixer": "lstm", "d_model": 24, "n_layers": 1, "position": "none",
                     "ffn": "none", "cross_attention": "additive", "n_heads": 1,
                     "context_length": 64, "encoder": {"n_layers": 1, "context_length": 12}},
           "data": {"source": "speech", "path": str(folder / "train.jsonl"),
                    "val_path": str(folder / "val.jsonl"), "n_mels": 16, "normalize": "global"},
           "train": {"steps": 6, "batch_size": 8, "eval_every": 6, "progress": False}}
    for key, value in changes.items():
        section, name = key.split("__")
        cfg[section] = {**cfg[section], name: value}
    return cfg


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    write_tone_corpus(folder, n_utterances=24, max_letters=4)
    return folder


@pytest.fixture(scope="module")
def run(tones, tmp_path_factory):
    out = tmp_path_factory.mktemp("tts") / "run"
    seqlab.fit(RunConfig.from_dict(config(tones)), out)
    return out


def test_the_loss_is_the_naive_sum_over_real_steps(run):
    pipeline = seqlab.load(run)
    model, source = pipeline.model, pipeline.objective.source
    model.decoder.embed.always = False  # no dropout: one pass to compare with
    source.load(pipeline.tokenizer, source.fitted())
    batch = source.batch(source.train, [0, 1, 2])
    result = model.loss(batch.inputs, batch.targets, batch.padding_mask, **batch.extras)
    total, steps = 0.0, 0
    for b in range(3):
        n = len(source.train.sources[b]) // 2
        ids = torch.as_tensor(source.train.targets[b])[None]
        dec = batch.extras["decoder_inputs"][b:b + 1, :n]
        out = model.teacher_forced(ids, dec)[0].float()  # (n, n_out + 1)
        frames = (out[:, :-1] - batch.targets[b, :n]).abs().mean(-1)
        stop = torch.zeros(n)
        stop[-1] = 1.0
        bce = -(5.0 * stop * torch.nn.functional.logsigmoid(out[:, -1])
                + (1 - stop) * torch.nn.functional.logsigmoid(-out[:, -1]))
        total += float((frames + bce).sum())
        steps += n
    assert int(result.count) == steps
    assert float(result.total.detach()) == pytest.approx(total, rel=1e-4)


def test_synthesis_through_the_state_equals_a_pass_over_what_it_made(run):
    pipeline = seqlab.load(run)
    model = pipeline.model
    model.decoder.embed.always = False
    ids = pipeline.text_ids("abca")
    steps = model.synthesize(ids, max_steps=12, stop_threshold=0.999999)[0]  # (T, n_out)
    inputs = torch.cat([torch.zeros(1, 1, model.n_out), steps[None, :-1]], 1)
    again = model.teacher_forced(ids, inputs)[0, :, :-1]
    assert torch.allclose(again, steps, atol=1e-4)


def test_synthesis_stops_when_the_stop_logit_says_so(run):
    model = seqlab.load(run).model
    ids = torch.tensor([[4, 5, 6]])
    with torch.no_grad():
        model.proj.bias[-1] = 50.0  # certain to stop at once
        assert len(model.synthesize(ids, max_steps=9)[0]) == 1
        model.proj.bias[-1] = -50.0  # never stops: the cap ends it
        assert len(model.synthesize(ids, max_steps=9)[0]) == 9


def test_a_seed_gives_the_same_audio_and_text_the_voice_cannot_say_is_refused(run, tmp_path):
    pipeline = seqlab.load(run)
    a, b = pipeline.speak("abc", seed=1), pipeline.speak("abc", seed=1)
    assert np.array_equal(a, b) and 0 < np.abs(a).max() <= 0.9 + 1e-6
    assert not np.array_equal(a, pipeline.speak("abc", seed=2))
    for text, why in (("", "the text is empty"),
                      ("abz!", r"'!', 'z' not in this voice's vocabulary \('abcdefgh'\)"),
                      ("abcd" * 5, "the text is 20 tokens long; this voice reads at most 12")):
        with pytest.raises(DataError, match=why):
            pipeline.speak(text)


@pytest.mark.parametrize("changes, why", [
    ({"data__features": "mfcc"}, "tts makes log-mel frames"),
    ({"data__normalize": "utterance"}, "data.normalize utterance removes it"),
    ({"data__spec_augment": True}, "turn it off"),
    ({"task_options__frames_per_step": 0}, "frames_per_step must be >= 1"),
])
def test_configs_that_cannot_train_a_voice_are_refused(tones, changes, why):
    with pytest.raises(ConfigError, match=why):
        RunConfig.from_dict(config(tones, **changes))


def test_seqlab_speak_writes_a_wav_file(run, tmp_path):
    out = tmp_path / "abc.wav"
    done = subprocess.run([sys.executable, "-m", "seqlab", "speak", str(run), "abc", "--out",
                           str(out), "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    samples, rate = soundfile.read(str(out))
    assert rate == 16000 and len(samples) >= 160  # at least one step of 2 frames
    assert np.allclose(samples, seqlab.load(run).speak("abc", seed=1), atol=1 / 2 ** 14)
    done = subprocess.run([sys.executable, "-m", "seqlab", "speak", str(run), "xyz", "--out",
                           str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "not in this voice's vocabulary" in done.stderr
    assert "Traceback" not in done.stderr


def test_guided_attention_charges_attention_off_the_diagonal(run):
    from types import SimpleNamespace

    model = seqlab.load(run).model
    model.guided_width = 0.2
    T = S = 8
    diagonal = torch.eye(T)[None, None]  # (B, H, T, S): step t reads character t
    anti = torch.eye(T).flip(1)[None, None]
    real = torch.ones(1, T, dtype=torch.bool)

    def charge(weights):
        crosses = [SimpleNamespace(last_weights=weights)]
        return model._off_diagonal(crosses, real, None, torch.zeros(1, S)).sum()

    assert float(charge(diagonal)) == pytest.approx(0.0, abs=1e-6)
    assert float(charge(anti)) > 3.0
    # and training with it adds that charge to the loss of the same batch
    pipeline = seqlab.load(run)
    source = pipeline.objective.source
    source.load(pipeline.tokenizer, source.fitted())
    batch = source.batch(source.train, [0, 1])
    model = pipeline.model
    model.decoder.embed.always = False
    plain = model.loss(batch.inputs, batch.targets, batch.padding_mask, **batch.extras).total
    model.guided = 2.0
    guided = model.loss(batch.inputs, batch.targets, batch.padding_mask, **batch.extras).total
    assert float(guided) > float(plain)
    assert all(not b.cross.keep_weights for b in model.decoder.blocks)
