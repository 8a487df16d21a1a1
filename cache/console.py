"""What every command shares: one-line errors, ``--debug``, and progress that works in logs.

CPU kernels. Before a command runs, :func:`cache.kernels.prepare` sets the environment of
the portable CPU kernels (the same bits on every x86-64 machine), unless the command has a
``--cpu-kernels native`` option and it was given (:func:`cpu_kernels_option`).

Errors. A user-reachable failure prints one line, ``Error: <what> ...``, and exits with
status 1 (bad data: a corrupt file, a mismatched store, a full disk) or 2 (bad usage: a
bad option, an output path that would overwrite something). The traceback is shown only
with ``--debug`` or ``IQA_DEBUG=1``. Commands get this by using :class:`Command` /
:class:`Group` as their click class (``@click.command(cls=Command)``); an exception that is
not one of the project's own (a bug) still prints one line, and says how to see the rest.

Progress. :func:`progress` is a tqdm bar on a terminal; when the stream is not a terminal
(DVC, CI, SLURM logs) it prints a plain line every ``IQA_PROGRESS_INTERVAL`` seconds
(default 10) with the count done, the rate and the time left, and a last line at the end.
``TQDM_DISABLE=1`` silences both.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import click

from cache import kernels

DEBUG_ENV = "IQA_DEBUG"
INTERVAL_ENV = "IQA_PROGRESS_INTERVAL"
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class UsageProblem(ValueError):
    """The command was asked for something it must refuse (exit status 2)."""


class DataProblem(RuntimeError):
    """The data given cannot be used as asked (exit status 1)."""


def _debug_wanted(ctx: click.Context | None) -> bool:
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return True
    while ctx is not None:
        if ctx.params.get("debug"):
            return True
        ctx = ctx.parent
    return False


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    return value


def _debug_option() -> click.Option:
    return click.Option(
        ["--debug"], is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
        help=f"Show the full traceback of an error (or set {DEBUG_ENV}=1).",
    )


class _DataError(click.ClickException):
    exit_code = 1


class _UsageError(click.ClickException):
    """A refused request: one line like a data error, exit status 2 like click's usage."""

    exit_code = 2


def _OneLine(message: str, exit_code: int) -> click.ClickException:  # noqa: N802
    return _UsageError(message) if exit_code == 2 else _DataError(message)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


def one_line_error(err: BaseException) -> click.ClickException:
    """The one-line click error that stands for ``err`` (see the module docstring)."""
    if isinstance(err, UsageProblem):
        return _OneLine(_first_line(err), 2)
    if isinstance(err, OSError) and err.errno is not None and not _is_project_error(err):
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        return _OneLine(f"{err.strerror or _first_line(err)}{where}", 1)
    if isinstance(err, MemoryError):
        return _OneLine(f"out of memory: {_first_line(err)}", 1)
    if _is_project_error(err):
        return _OneLine(_first_line(err), 1)
    hint = f"(an internal error: --debug or {DEBUG_ENV}=1 shows the traceback; please report it)"
    return _OneLine(f"{type(err).__name__}: {_first_line(err)} {hint}", 1)


def _is_project_error(err: BaseException) -> bool:
    """An error raised on purpose by this project's packages (they name what is wrong)."""
    module = type(err).__module__.split(".")[0]
    return module in ("cache", "extract", "heads", "iqadata", "pipelines") or isinstance(
        err, DataProblem | ValueError | KeyError | FileNotFoundError | FileExistsError
    )


class Command(click.Command):
    """A click command with ``-h``, ``--debug`` and one-line errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", dict(CONTEXT))
        super().__init__(*args, **kwargs)
        self.params.append(_debug_option())

    def invoke(self, ctx: click.Context) -> Any:
        kernels.prepare(ctx.params.get("cpu_kernels") or "portable")  # before torch starts
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as err:  # noqa: BLE001 - the one place errors become one line
            if _debug_wanted(ctx):
                raise
            raise one_line_error(err) from err


def cpu_kernels_option() -> Any:
    """The ``--cpu-kernels portable|native`` option of the commands that compute on a CPU."""
    return click.option(
        "--cpu-kernels", type=click.Choice(list(kernels.MODES)), default="portable",
        show_default=True,
        help="On a CPU: 'portable' gives the same bits on every x86-64 machine (oneDNN off, "
             "MKL's compatible branch, AVX2 kernels; about 1.5x the time of a small head), "
             "'native' this machine's fastest kernels. No effect on a GPU.",
    )


def out_option(help: str, *, folder: bool) -> Any:
    """A command's required ``--out``: a folder (``folder``) or a file path."""
    kind = {"file_okay": False} if folder else {"dir_okay": False}
    return click.option("--out", required=True, type=click.Path(path_type=Path, **kind), help=help)


def count_option(*decls: str, default: int, minimum: int, help: str | None = None) -> Any:
    """An integer option of at least ``minimum``, its default shown in the help."""
    return click.option(
        *decls, default=default, show_default=True, type=click.IntRange(min=minimum), help=help
    )


def choice_option(*decls: str, choices: list[str], default: str, help: str | None = None) -> Any:
    """An option taking one of ``choices``, its default shown in the help."""
    return click.option(
        *decls, default=default, show_default=True, type=click.Choice(choices), help=help
    )


class Group(click.Group):
    """A click group whose subcommands are :class:`Command` s."""

    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", dict(CONTEXT))
        super().__init__(*args, **kwargs)


# ---------------------------------------------------------------- progress


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _hms(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LogProgress:
    """A tqdm-like counter that prints a plain status line every ``interval`` seconds."""

    def __init__(
        self, total: int | None, desc: str, unit: str, stream: IO[str], interval: float
    ) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.interval, self.n = interval, 0
        self._start = self._last = time.monotonic()
        self._postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print(now)

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _print(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f", ETA {_hms((self.total - self.n) / rate)}"
        extra = f", {self._postfix}" if self._postfix else ""
        line = f"{self.desc}: {done} {self.unit}{pct}, {rate:.2f} {self.unit}/s{eta}{extra}"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        now = time.monotonic()
        if self.n:
            self._print(now)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    total: int | None, desc: str, unit: str = "img", *, enabled: bool = True,
    stream: IO[str] | None = None,
) -> Any:
    """A progress counter: tqdm on a terminal, timed plain lines otherwise (see above).

    The object has ``update(n)``, ``set_postfix(**kw)``, ``write(text)``, ``close()`` and
    works as a context manager.
    """
    stream = stream if stream is not None else sys.stderr
    off = not enabled or os.environ.get("TQDM_DISABLE", "") not in ("", "0")
    if not off and _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
    interval = float(os.environ.get(INTERVAL_ENV, "10"))
    if off:
        interval = float("inf")
    bar = LogProgress(total, desc, unit, stream, interval)
    if off:
        bar.close = lambda: None  # type: ignore[method-assign]
    return bar


# ---------------------------------------------------------------- KEY=VALUE options


def parse_assignments(
    items: tuple[str, ...] | list[str], option: str, *, typed: bool = True,
    keys: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """``KEY=VALUE`` option values as a dict (every command's one parser for them).

    Args:
        items: the option's values.
        option: the option's name, for messages.
        typed: read values as YAML (``[1, 2]``, ``true``, ``1e-4``; sequences become
            tuples, as frozen configs want them); False keeps them as text.
        keys: the only keys allowed, when given.

    Raises:
        click.BadParameter: a malformed item or an unknown key (a usage error).
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or (not typed and not raw):
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        if keys is not None and key not in keys:
            raise click.BadParameter(f"unknown key {key!r}; choose from {list(keys)}",
                                     param_hint=option)
        if not typed:
            out[key] = raw
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key] = _tuples(value)
    return out


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
