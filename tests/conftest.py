import logging

import pytest
import torch


# One intra-op thread: the models here are tiny, and on a 2-core machine two threads
# spend more time waiting for each other than computing (10x slower on a busy machine).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def caplog_seqlab(caplog):
    caplog.set_level(logging.WARNING, logger="seqlab")
    return caplog


@pytest.fixture
def run_chunks():
    """``run(mixer, x, splits, state, padding_mask) -> (y, state)``: feed ``x`` (B, T, D)
    to a mixer in chunks of the given lengths, threading ``state`` (default: a fresh one)
    and slicing ``padding_mask`` (B, T) alike, and concatenate the outputs; the streaming
    half of every chunked == full test."""

    def run(mixer, x, splits, state=None, padding_mask=None):
        state = mixer.init_state(x.shape[0]) if state is None else state
        outs, t = [], 0
        for n in splits:
            mask = None if padding_mask is None else padding_mask[:, t:t + n]
            y, state = mixer(x[:, t:t + n], state, padding_mask=mask)
            outs.append(y)
            t += n
        return torch.cat(outs, 1), state

    return run
