"""Every per-dataset table is keyed by the dataset keys the importers produce.

A manifest's dataset name is its importer's key (``iqadata.importers.IMPORTERS``; the
demo set's is ``iqadata.demo.DEMO_DATASET``), and the code looks its tables up by that
name. A table keyed by another spelling (the DP-IQA reference's ``clive``, ``koniq``,
``livefb``) silently never applies. The tables are discovered, not listed:

* code: every module-level value and class attribute of the packages (dicts, lists,
  tuples, sets and dataclass instances, walked recursively), e.g. the student's
  ``MILESTONES`` or a head's ``train_defaults``;
* ``pipelines/report/published.yaml``: every entry's ``results``, ``strongest_baseline`` and
  ``trained_on``, and any other mapping or list in the file;
* every preset: ``datasets``, ``imports`` (keys and importer names), ``mixed.*.datasets``,
  and any other mapping or list in it.

A mapping counts as a per-dataset table when one of its keys is a dataset key or a known
other spelling (``aliases`` in ``published.yaml``), compared without case, ``-`` and ``_``;
a list of strings when one item is one, as written (so a list of folder names such as
``AGIQA-3K`` is not taken for one). Then every key or item must be a dataset key. The
top level of a params file (whose ``demo`` section is the demo set's settings) is not a
table, and tables built inside functions are not seen.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from iqadata.demo import DEMO_DATASET
from iqadata.importers import IMPORTERS
from iqadata.presets import names, preset_text
from pipelines.report.published import load_published

PACKAGES = ("cache", "extract", "heads", "iqadata", "pipelines")
KEYS = set(IMPORTERS) | {DEMO_DATASET}


def _norm(word: str) -> str:
    return word.lower().replace("-", "").replace("_", "")


def _words() -> set[str]:
    """Dataset keys and the other spellings that give a table away."""
    aliases = load_published().get("aliases") or {}
    return {_norm(k) for k in KEYS} | {_norm(a) for a in aliases}


def _tables(
    value: Any, where: str, words: set[str], depth: int = 0
) -> Iterator[tuple[str, list[Any]]]:
    """(place, keys or items) of every per-dataset table under ``value``."""
    if depth > 8:
        return
    if isinstance(value, Mapping):
        if any(isinstance(k, str) and _norm(k) in words for k in value):
            yield where, list(value)
        for key, item in value.items():
            yield from _tables(item, f"{where}.{key}", words, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        if all(isinstance(v, str) for v in value):
            if any(v.lower() in words for v in value):
                yield where, list(value)
        else:
            for i, item in enumerate(value):
                yield from _tables(item, f"{where}[{i}]", words, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _tables(getattr(value, f.name), f"{where}.{f.name}", words, depth + 1)


def _code_values() -> Iterator[tuple[str, Any]]:
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        modules = [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, f"{package}.")]
        for name in modules:
            module = importlib.import_module(name)
            for attr, value in vars(module).items():
                if attr.startswith("__"):
                    continue
                if inspect.isclass(value) and value.__module__ == name:
                    for cattr, cvalue in vars(value).items():
                        if not cattr.startswith("__"):
                            yield f"{name}.{attr}.{cattr}", cvalue
                elif not inspect.ismodule(value) and not callable(value):
                    yield f"{name}.{attr}", value


def _yaml_values() -> Iterator[tuple[str, Any]]:
    """The sections of ``published.yaml`` and of every preset (a file's top level, whose
    keys are its sections, is no table)."""
    files = {"published.yaml": load_published()}
    files |= {f"presets/{n}.yaml": yaml.safe_load(preset_text(n)) for n in names()}
    for where, data in files.items():
        for key, section in data.items():
            if key != "aliases":  # alias -> key: its keys are the other spellings
                yield f"{where} {key}", section


def _structural() -> Iterator[tuple[str, list[Any]]]:
    """Keys that are dataset keys by their place, whatever they look like."""
    data = load_published()
    yield "published.yaml aliases (values)", list((data.get("aliases") or {}).values())
    for entry in data["entries"]:
        yield f"published.yaml {entry['id']}.results", list(entry["results"])
        baseline = entry.get("strongest_baseline") or {}
        yield f"published.yaml {entry['id']}.strongest_baseline", list(baseline)
        if "trained_on" in entry:
            yield f"published.yaml {entry['id']}.trained_on", [entry["trained_on"]]
    for name in names():
        params = yaml.safe_load(preset_text(name))
        yield f"presets/{name}.yaml datasets", list(params["datasets"])
        yield f"presets/{name}.yaml imports", list(params["imports"])
        for key, mix in (params.get("mixed") or {}).items():
            yield f"presets/{name}.yaml mixed.{key}.datasets", str(mix["datasets"]).split()


def _misnamed_importers() -> list[str]:
    return [
        f"presets/{name}.yaml imports.{key}.importer: {spec['importer']!r}"
        for name in names()
        for key, spec in yaml.safe_load(preset_text(name))["imports"].items()
        if spec["importer"] not in IMPORTERS
    ]


def test_every_per_dataset_table_uses_the_importers_keys() -> None:
    words = _words()
    found = [
        table
        for source in (_code_values, _yaml_values)
        for top, value in source()
        for table in _tables(value, top, words)
    ]
    found += list(_structural())
    assert any(w == "pipelines.distill.train.MILESTONES" for w, _ in found)  # the walk sees it
    bad = [f"{where}: {k!r}" for where, items in found for k in items if k not in KEYS]
    aliases = load_published().get("aliases") or {}
    bad += [f"published.yaml aliases: {a!r} is a dataset key itself" for a in aliases if a in KEYS]
    bad += _misnamed_importers()
    assert not bad, "keys no importer produces (use iqadata.importers keys):\n" + "\n".join(bad)
