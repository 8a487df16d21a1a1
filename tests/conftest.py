"""Shared pytest setup: no network, no hub, deterministic and quiet."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from cache import kernels

kernels.prepare()  # the portable CPU kernels, as every command runs them (before torch starts)

import torch  # noqa: E402

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


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_up(endpoint: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto server at {endpoint} did not start in {timeout} s")


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible server (moto) on a free port of 127.0.0.1, with test credentials
    in the environment; stopped when the session ends."""
    pytest.importorskip("moto")
    port = _free_port()
    env = {**os.environ, **S3_CREDENTIALS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    saved = {k: os.environ.get(k) for k in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_up(endpoint, proc)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
