"""Shared pytest setup: no network, no hub, deterministic and quiet."""

from __future__ import annotations

import os

import pytest
import torch

# Nothing in the test suite may reach a model hub; offline mode makes a stray hub call
# fail at once instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny models; avoids oversubscribing 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
