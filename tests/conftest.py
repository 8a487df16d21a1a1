"""Shared pytest setup: no network, no hub, deterministic and quiet."""

from __future__ import annotations

import os

# Nothing in the test suite may reach a model hub; offline mode makes a stray hub call
# fail at once instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
