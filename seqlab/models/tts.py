"""A speech synthesiser: an encoder over text and an autoregressive decoder over
log-mel frames (Tacotron's shape on seqlab's encoder-decoder).

The decoder reads the frames it has made so far through a pre-net (two ReLU layers
whose dropout stays on when synthesising, which Tacotron found keeps the decoder from
leaning on its own outputs), attends to the encoded text with its cross-attention, and
emits ``frames_per_step`` frames of ``n_mels`` values and a stop logit per step. The
decoder's state holds its layers' states and the text's keys and values, so synthesis
is one step per call, as decoding text is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.models.backbone import Backbone
from seqlab.models.heads import LossSum
from seqlab.models.seq2seq import Decoder, Seq2SeqModel


class Prenet(nn.Module):
    """Frames (B, T, F) -> (B, T, D): two ReLU layers, each followed by dropout that is
    applied in training and in synthesis alike (``always``; an export turns it off)."""

    own_init = True  # torch's default init: N(0, 0.02) would silence the ReLUs

    def __init__(self, n_in: int, d_model: int, dropout: float = 0.5):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(n_in, d_model), nn.Linear(d_model, d_model)
        self.p, self.always = dropout, True

    def forward(self, x: Tensor) -> Tensor:
        on = self.always or self.training
        x = F.dropout(F.relu(self.fc1(x.to(self.fc1.weight.dtype))), self.p, training=on)
        return F.dropout(F.relu(self.fc2(x)), self.p, training=on)


class SpeechSynthesizer(Seq2SeqModel):
    """Text encoder + frame decoder; the output layer gives ``n_out`` frame values and a
    stop logit per step (``logits[..., :-1]`` and ``logits[..., -1]``).

    Training (``loss``): teacher forcing. ``decoder_inputs`` (B, T, n_out) are a zero
    "go" step and then the target steps shifted by one; the loss per real step is the
    mean absolute error of its frame values plus ``stop_weight``-weighted binary
    cross-entropy of its stop logit (1 at each row's last real step), counted per step.
    """

    def __init__(self, encoder: Backbone, decoder: Decoder, n_out: int, *,
                 stop_weight: float = 5.0, guided_attention: float = 0.0,
                 guided_width: float = 0.2):
        super().__init__(encoder, decoder, n_out + 1, tie_embeddings=False, final_logits_bias=True)
        self.n_out, self.stop_weight = n_out, stop_weight
        self.guided, self.guided_width = guided_attention, guided_width

    def loss(self, inputs: Tensor, targets: Tensor, padding_mask: Tensor | None = None, *,
             decoder_inputs: Tensor, decoder_mask: Tensor | None = None, **extras) -> LossSum:
        memory = self.memory(inputs, padding_mask)
        crosses = [b.cross for b in self.decoder.blocks] if self.guided > 0 else []
        for cross in crosses:
            cross.keep_weights = True
        try:
            hidden, _ = self.decoder(decoder_inputs, memory=memory, padding_mask=decoder_mask)
        finally:
            for cross in crosses:
                cross.keep_weights = False
        out = self.proj(hidden).float()  # (B, T, n_out + 1)
        B, T = out.shape[:2]
        real = (decoder_mask if decoder_mask is not None
                else torch.ones(B, T, dtype=torch.bool, device=out.device))
        last = real.sum(1, keepdim=True) - 1  # (B, 1)
        stop = (torch.arange(T, device=out.device)[None] == last).float()
        frames = (out[..., :-1] - targets.float()).abs().mean(-1)  # (B, T)
        stops = F.binary_cross_entropy_with_logits(
            out[..., -1], stop, pos_weight=torch.tensor(self.stop_weight, device=out.device),
            reduction="none")
        per_step = frames + stops
        if crosses:
            per_step = per_step + self.guided * self._off_diagonal(crosses, real, padding_mask, inputs)
        total = per_step.masked_fill(~real, 0.0).sum()
        return LossSum(total, real.sum(), out)

    def _off_diagonal(self, crosses, real: Tensor, text_mask: Tensor | None,
                      text: Tensor) -> Tensor:
        """(B, T) attention each step puts far from the diagonal of its row: guided
        attention (Tachibana et al., 2017), ``sum_s A[t, s] (1 - exp(-(s/S - t/T)^2 / 2g^2))``
        averaged over layers and heads, with S and T each row's real lengths."""
        B, T = real.shape
        S = text.shape[1]
        steps = real.sum(1, keepdim=True).clamp(min=1).float()  # (B, 1)
        chars = (text_mask.sum(1, keepdim=True) if text_mask is not None
                 else torch.full((B, 1), S, device=real.device)).clamp(min=1).float()
        t = torch.arange(T, device=real.device)[None, :, None] / steps[:, :, None]  # (B, T, 1)
        s = torch.arange(S, device=real.device)[None, None, :] / chars[:, :, None]  # (B, 1, S)
        far = 1.0 - torch.exp(-((s - t) ** 2) / (2 * self.guided_width ** 2))  # (B, T, S)
        weights = torch.stack([c.last_weights.float().mean(1) for c in crosses]).mean(0)
        return (weights * far).sum(-1)

    @torch.no_grad()
    def synthesize(self, ids: Tensor, mask: Tensor | None = None, *, max_steps: int,
                   stop_threshold: float = 0.5) -> list[Tensor]:
        """The (steps, n_out) outputs of each text row, up to and including the first
        step whose stop probability passes ``stop_threshold`` (or ``max_steps``).
        Randomness (the pre-net's dropout) comes from torch's generator: seed it."""
        B = ids.shape[0]
        state = self.start(ids, mask)
        frame = torch.zeros(B, 1, self.n_out, device=ids.device)
        outs, lengths = [], torch.full((B,), max_steps, dtype=torch.long)
        done = torch.zeros(B, dtype=torch.bool)
        for step in range(max_steps):
            out = self(frame, state)
            state, pred = out.state, out.logits[:, -1].float()
            outs.append(pred[:, :-1])
            ended = ~done & (torch.sigmoid(pred[:, -1]).cpu() > stop_threshold)
            lengths[ended] = step + 1
            done |= ended
            if bool(done.all()):
                break
            frame = pred[:, None, :-1]
        steps = torch.stack(outs, 1)  # (B, T, n_out)
        return [steps[b, :int(lengths[b])] for b in range(B)]


__all__ = ["Prenet", "SpeechSynthesizer"]
