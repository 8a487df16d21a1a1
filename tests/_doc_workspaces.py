"""The workspaces the documented command blocks run in (see tests/_doc_blocks.py).

* ``live``: the project's ``params.yaml`` and ``dvc.yaml``, a tiny LIVE Release 2 in its
  official layout under ``data/raw/live`` (tests/_live_release.py), ``my.csv`` with its
  images under ``data/raw/mine`` for the generic CSV import, and ``my_prompt.csv``.
* ``releases``: per block, what its ``iqa-data import`` commands read, at the paths they
  name: the official layouts of tests/_layouts.py (built once and linked in), the
  variants the docs name (a renamed image folder, CSIQ's flat copy), a pyiqa meta-info
  file, ``my.csv``; a manifest that a block starts from (``iqa-data split
  data/kadid10k/manifest.csv``) is imported from its official layout first.
* ``gpu``: the live workspace after its blocks ran, made a git + DVC repository with the
  project's code, with ``models/`` linked to ``$IQA_MODELS`` (default: the repository's
  ``models/``) and every ``data/raw/<key>`` the repository holds besides ``live``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import _layouts as L
from _doc_blocks import ROOT, Block, block_env, commands
from _live_release import make_live_images, make_mine

from iqadata.importers import import_to

PROJECT_FILES = ("params.yaml", "dvc.yaml", ".dvcignore")
CODE = ("cache", "extract", "heads", "iqadata", "pipelines")
RAW = "data/raw"


def live_workspace(path: Path) -> Path:
    """A workspace with the project's pipeline files, a tiny LIVE, ``my.csv`` and
    ``my_prompt.csv`` (10 LIVE images and their DMOS, a prompt for PromptIQA)."""
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, path / name)
    labels = make_live_images(path / RAW / "live")
    make_mine(path, f"{RAW}/mine")
    prompt = [f"{RAW}/live/{image},{dmos:.2f}" for image, dmos in labels[::78]]
    (path / "my_prompt.csv").write_text("image,score\n" + "\n".join(prompt) + "\n")
    return path


def models_dir() -> Path:
    return Path(os.environ.get("IQA_MODELS", ROOT / "models"))


def gpu_workspace(live: Path, path: Path) -> Path:
    """A copy of the live workspace (after its blocks) as a DVC project with models."""
    shutil.copytree(live, path, symlinks=True)
    for folder in CODE:
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / folder, path / folder, ignore=ignore)
    (path / "models").symlink_to(models_dir().resolve())
    for raw in sorted((ROOT / RAW).glob("*")) if (ROOT / RAW).is_dir() else []:
        if not (path / RAW / raw.name).exists():
            (path / RAW / raw.name).symlink_to(raw.resolve())
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=path, env=block_env(), check=True, capture_output=True)
    return path


# ---------------------------------------------------------------- official releases


class Releases:
    """The official layouts (tests/_layouts.py), each built once on first use."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def official(self, key: str) -> Path:
        root = self.base / key
        if not root.exists():
            root.mkdir(parents=True)
            blank = self.base / f"blank-{key}"  # one per release: a file has at most 65k links
            blank.write_bytes(b"")
            L.MAKERS[key](root, blank)
        return root


def _renamed(key: str, folder: str, new: str) -> Callable[[Path], None]:
    """A variant of ``key``'s release with its image folder ``folder`` renamed ``new``."""

    def make(root: Path) -> None:
        root.mkdir(parents=True)
        L.MAKERS[key](root, L.blank_file(root))
        (root / folder).rename(root / new)

    return make


def _csiq_flat(root: Path) -> None:
    root.mkdir(parents=True)
    L.make_csiq_flat(root, L.blank_file(root))


# (dataset, option, value) the docs name -> how the release that takes it is laid out;
# None: the official layout has it
VARIANTS: dict[tuple[str, str, str], Callable[[Path], None] | None] = {
    ("spaq", "--image-dir", "img_resize"): _renamed("spaq", "TestImage", "img_resize"),
    ("csiq", "--label-file", "csiq_label.txt"): _csiq_flat,
    ("csiq", "--image-dir", "dst_imgs_all"): _csiq_flat,
    ("koniq10k", "--label-file", "koniq10k_scores_and_distributions.csv"): None,
    ("koniq10k", "--image-dir", "1024x768"): None,
}
LAYOUT_OPTIONS = ("--label-file", "--labels", "--image-dir", "--ref-dir", "--sheet")


def _options(words: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a command (flags map to '')."""
    out = {}
    for k, word in enumerate(words):
        if word.startswith("--"):
            nxt = words[k + 1] if k + 1 < len(words) else ""
            out[word] = "" if nxt.startswith("--") else nxt
    return out


def _pyiqa_koniq(workspace: Path, labels: str) -> None:
    """A pyiqa-style KonIQ-10k meta-info file: img_name, mos, std, official_split."""
    names = L.koniq_names()
    mos = L.scores(len(names), 3.9, 88.4)
    parts = ["train"] * 7058 + ["val"] * 1000 + ["test"] * 2015
    lines = ["img_name,mos,std,official_split"]
    lines += [f"{n},{m},0.5,{p}" for n, m, p in zip(names, mos, parts, strict=True)]
    (workspace / labels).write_text("\n".join(lines) + "\n")


class ReleaseWorkspace:
    """Lays out what one block's import commands read (see the module docstring)."""

    def __init__(self, path: Path, releases: Releases) -> None:
        self.path, self.releases = path, releases
        self.imported: set[str] = set()
        path.mkdir(parents=True)

    def prepare(self, block: Block) -> Path:
        for words in commands(block.text):
            if words[:2] == ["iqa-data", "import"] and len(words) > 2:
                self._provide(words[2], _options(words))
            elif words[:2] == ["iqa-data", "split"] and len(words) > 2:
                self._manifest(words[2])
        return self.path

    def _provide(self, key: str, opts: dict[str, str]) -> None:
        root = opts.get("--root", "")
        assert root.startswith(f"{RAW}/"), f"import {key}: --root {root!r} is not under {RAW}/"
        self.imported.add(opts.get("--out", ""))
        target = self.path / root
        if key == "csv":
            assert opts.get("--labels") == "my.csv", "the generic import reads my.csv"
            if not target.exists():
                make_mine(self.path, root)
            return
        layout = dict(opts)
        if key == "pyiqa":
            assert layout.get("--name") == "koniq10k", "only KonIQ-10k's pyiqa file is made"
            _pyiqa_koniq(self.path, layout.pop("--labels"))
            key = "koniq10k"
        if target.exists():
            return
        given = [(key, o, layout[o]) for o in LAYOUT_OPTIONS if o in layout]
        unknown = [g for g in given if g not in VARIANTS]
        assert not unknown, f"no layout for {unknown}: add it to VARIANTS in {__file__}"
        variants = {VARIANTS[g] for g in given} - {None}
        assert len(variants) <= 1, f"two layouts asked for by {given}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if variants:
            variants.pop()(target)  # type: ignore[misc]
        else:
            target.symlink_to(self.releases.official(key))

    def _manifest(self, manifest: str) -> None:
        """The official import of ``data/<key>/manifest.csv`` when the block has none."""
        if manifest in self.imported:
            return
        key = Path(manifest).parent.name
        import_to(key, self.releases.official(key), self.path / manifest)
        self.imported.add(manifest)
