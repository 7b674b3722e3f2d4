import logging

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def caplog_seqlab(caplog):
    caplog.set_level(logging.WARNING, logger="seqlab")
    return caplog
