"""Training runs in worker processes (``iqa-train-head --jobs``) that share one start-up.

The workers inherit this process's number of torch threads; each run gives the same bytes
as in one process (``tests/test_train_cli.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from heads.registry import HEADS

T = TypeVar("T")

# What the workers' server imports before forking them, besides the module of the function
# the workers run (``heads.experiment``: torch, the training loop, the store): torch._dynamo,
# which the first optimizer built in a process imports (~1.8 s), and the head's own module
# (``worker_preload``; timm for the prompt head, ~2.5 s).
WORKER_PRELOAD = ("torch._dynamo",)


def worker_preload(head: str) -> list[str]:
    """The modules the workers' server imports for training ``head``."""
    return [*WORKER_PRELOAD, HEADS[head].partition(":")[0]]


def _worker_start(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def in_processes(
    fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], *, jobs: int, head: str
) -> list[T]:
    """``fn(*args)`` for every ``args`` of ``calls``, in order, in a pool of ``jobs``
    processes that share one start-up (``fn`` must be a module-level function).

    The workers fork from a server process (``forkserver``) that has imported the training
    modules and the optimizers' compiler hooks but has run no torch operation, so no
    thread pool or torch state is forked, and the ~5 CPU-seconds of imports are paid once
    per pool rather than once per worker. The server starts from this process's
    environment, so the portable kernels' variables (``cache.kernels.prepare``) hold there.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    context: multiprocessing.context.BaseContext
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([fn.__module__, *worker_preload(head)])
    else:  # Windows: fresh processes, each importing for itself
        context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(calls)), mp_context=context,
        initializer=_worker_start, initargs=(torch.get_num_threads(),),
    )
    with pool:
        futures = [pool.submit(fn, *args) for args in calls]
        return [f.result() for f in futures]
