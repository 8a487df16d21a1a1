"""Shape rules for the source tree: no formatter markers, no functions with long parameter lists."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER_DIRS = ("extract", "cache", "heads", "iqadata", "pipelines", "bench", "tests")
PARAM_DIRS = ("extract", "cache", "heads", "iqadata", "pipelines")
MAX_PARAMS = 8
# Built by concatenation so this file does not contain the marker itself.
MARKER = "# fmt" + ": skip"


def _files(dirs: tuple[str, ...]) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def _n_params(args: ast.arguments) -> int:
    positional = [*args.posonlyargs, *args.args]
    n = len(positional) + len(args.kwonlyargs)
    n += (args.vararg is not None) + (args.kwarg is not None)
    if positional and positional[0].arg in ("self", "cls"):
        n -= 1
    return n


def test_no_formatter_skip_markers() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in _files(MARKER_DIRS)
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if MARKER in line
    ]
    assert not found, f"formatter markers left in: {found}"


def test_no_function_takes_more_than_eight_parameters() -> None:
    found = []
    for path in _files(PARAM_DIRS):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = _n_params(node.args)
                if n > MAX_PARAMS:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n})")
    assert not found, f"functions with more than {MAX_PARAMS} parameters: {found}"
