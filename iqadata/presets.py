"""Paper presets: one params file per paper table, and a check of what a run still lacks.

A preset is a complete ``params.yaml`` for the DVC pipeline, kept in
``iqadata/presets/<name>.yaml``, whose header names the paper, table and settings it
follows. ``iqa-data preset NAME`` writes it as ``params.yaml`` (only over a params file, never
over anything else), optionally with the dataset and model folders of this machine; then
``iqa-data check`` lists what is missing before anything runs, and ``dvc repro`` runs the
protocol. ``demo`` is the shipped ``params.yaml`` itself.

Dataset roots in presets are ``data/raw/<name>`` (link your copies there, or pass
``--data-root``) and checkpoints ``models/<official file name>`` (or ``--models``).
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cache.outputs import atomic_write_text, check_output_file, first_line_is

PARAMS_MARKER = "# iqa-params"
ROOT_PREFIX = "data/raw/"
MODELS_PREFIX = "models/"
# The official files' names carry the first hex digits of their sha256 (torch.hub's
# convention), so a copy can be checked without a published hash list.
HASH_IN_NAME = re.compile(r"[-_]([0-9a-f]{6,})\.(pth|pt)$")


@dataclass(frozen=True)
class Problem:
    """Something a run of the params file still needs."""

    what: str
    path: str
    fix: str

    def line(self) -> str:
        return f"{self.what}: {self.path} ({self.fix})"


def names() -> list[str]:
    """The presets shipped with the package."""
    folder = importlib.resources.files("iqadata") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """The text of preset ``name`` (ValueError naming the presets for an unknown one)."""
    if name not in names():
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(names())}")
    return (importlib.resources.files("iqadata") / "presets" / f"{name}.yaml").read_text()


def describe(name: str) -> str:
    """The header comment of a preset (what it reproduces), as one paragraph."""
    lines = []
    for line in preset_text(name).splitlines()[1:]:
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return " ".join(lines)


def _relocate(text: str, data_root: str | None, models: str | None) -> str:
    if data_root:
        text = text.replace(f": {ROOT_PREFIX}", f": {data_root.rstrip('/')}/")
    if models:
        text = text.replace(f": {MODELS_PREFIX}", f": {models.rstrip('/')}/")
    return text


def write_preset(
    name: str, out: str | Path = "params.yaml", *, data_root: str | None = None,
    models: str | None = None,
) -> Path:
    """Write preset ``name`` to ``out`` (new, or a params file of this project's).

    Raises:
        OutputPathError: ``out`` exists and is not an iqa params file.
    """
    target = check_output_file(out, first_line_is(PARAMS_MARKER), "params file")
    atomic_write_text(target, _relocate(preset_text(name), data_root, models))
    return target


def check(params_path: str | Path = "params.yaml") -> list[Problem]:
    """What a ``dvc repro`` of this params file would miss: data, label files, weights."""
    params = yaml.safe_load(Path(params_path).read_text(encoding="utf-8")) or {}
    problems = [p for name, spec in (params.get("imports") or {}).items()
                for p in _check_dataset(name, spec)]
    for backbone in params.get("extract", {}).get("backbones", []):
        problems += _check_weights(backbone, (params.get("checkpoints") or {}).get(backbone))
        for key in ("text_model",):
            extra = ((params.get("arch") or {}).get(backbone) or {}).get(key)
            if extra and not Path(extra).exists():
                problems.append(Problem(f"{backbone} {key}", extra, "a local model folder"))
    return problems


def _check_dataset(name: str, spec: dict[str, Any]) -> list[Problem]:
    from iqadata.importers import get_importer
    from iqadata.manifest import ManifestError

    root = str(spec.get("root", ""))
    if not root or not Path(root).is_dir():
        return [Problem(f"dataset {name}", root or "(no root)",
                        "the folder of its official release; link it there or set "
                        f"imports.{name}.root")]
    try:
        get_importer(str(spec.get("importer", name)))(root)
    except ManifestError as err:
        return [Problem(f"dataset {name}", root, str(err))]
    return []


def _check_weights(backbone: str, path: str | None) -> list[Problem]:
    if backbone in ("nss", "nss_ml"):
        return []
    if not path:
        return [Problem(f"{backbone} weights", "(none)", f"set checkpoints.{backbone}")]
    if not Path(path).exists():
        return [Problem(f"{backbone} weights", path, "a local copy of the official file")]
    match = HASH_IN_NAME.search(Path(path).name)
    if match and Path(path).is_file():
        from iqadata.manifest import file_sha256

        digest = file_sha256(path)
        if not digest.startswith(match.group(1)):
            return [Problem(f"{backbone} weights", path,
                            f"sha256 {digest[:12]}... does not start with {match.group(1)}, "
                            "the hash in the official name: a damaged or other file")]
    return []
