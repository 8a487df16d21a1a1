"""What is known about each supported dataset: its release, labels and official counts.

One literal table, :data:`KNOWN`, used by the importers (label kind, orientation, range,
counts), by the generic CSV and pyiqa paths (``--name live`` takes LIVE's labels from
here), and by ``iqa-data import --help``.

Sources of the counts: the papers' dataset tables (SAM-IQA Table 2, PromptIQA Table 1,
DP-IQA section IV-A). FLIVE's 39,810 and AGIQA-3k's 2,982 were also counted in the label
files the dataset authors publish. Counts marked ``checked=False`` rest on the papers and
on public loaders only: they could not be compared with a download here.
"""

from __future__ import annotations

from dataclasses import dataclass

from cache.manifest import DatasetInfo
from pipelines.importers._common import Expected


@dataclass(frozen=True)
class Known:
    """A supported dataset.

    Attributes:
        title: the dataset's usual name.
        release: the release the importer reads, named by its files (no URL).
        kind: ``MOS`` or ``DMOS`` (as the label file stores it).
        lower_better: True when a lower raw score is better quality.
        score_range: nominal (low, high) of the raw score.
        expected: official (images, references).
        checked: False where layout or count could not be compared with a download.
    """

    title: str
    release: str
    kind: str
    lower_better: bool
    score_range: tuple[float, float]
    expected: Expected
    checked: bool = True

    def info(
        self, name: str, root: str, score_range: tuple[float, float] | None = None
    ) -> DatasetInfo:
        """Manifest metadata for dataset ``name`` rooted at ``root``."""
        low_high = score_range if score_range is not None else self.score_range
        return DatasetInfo(name, self.kind, self.lower_better, low_high, root)


KNOWN: dict[str, Known] = {
    "live": Known(
        "LIVE",
        "LIVE IQA Database Release 2 (dmos_realigned.mat, refnames_all.mat, refimgs/,"
        " jp2k/ jpeg/ wn/ gblur/ fastfading/)",
        "DMOS",
        True,
        (0.0, 100.0),
        Expected(779, 29),
    ),
    "csiq": Known(
        "CSIQ",
        "CSIQ (csiq.DMOS.xlsx, src_imgs/, dst_imgs/<type>/)",
        "DMOS",
        True,
        (0.0, 1.0),
        Expected(866, 30),
    ),
    "tid2013": Known(
        "TID2013",
        "TID2013 (mos_with_names.txt, reference_images/, distorted_images/)",
        "MOS",
        False,
        (0.0, 9.0),
        Expected(3000, 25),
    ),
    "kadid10k": Known(
        "KADID-10k",
        "KADID-10k (dmos.csv, images/)",
        "MOS",
        False,
        (1.0, 5.0),
        Expected(10125, 81),
    ),
    "pipal": Known(
        "PIPAL",
        "PIPAL public training set of NTIRE 2021 (Train_Label/*.txt, Train_Ref/, Distortion_1..4/)",
        "MOS",
        False,
        (800.0, 2000.0),
        Expected(23200, 200),
        checked=False,
    ),
    "koniq10k": Known(
        "KonIQ-10k",
        "KonIQ-10k (koniq10k_scores_and_distributions.csv or"
        " koniq10k_distributions_sets.csv, 1024x768/)",
        "MOS",
        False,
        (0.0, 100.0),
        Expected(10073),
    ),
    "spaq": Known(
        "SPAQ",
        "SPAQ (Annotations/MOS and Image attribute scores.xlsx, TestImage/)",
        "MOS",
        False,
        (0.0, 100.0),
        Expected(11125),
    ),
    "livec": Known(
        "LIVE Challenge",
        "LIVE In the Wild Image Quality Challenge Database"
        " (Data/AllImages_release.mat, Data/AllMOS_release.mat, Images/)",
        "MOS",
        False,
        (0.0, 100.0),
        Expected(1162),
    ),
    "bid": Known(
        "BID",
        "BID (DatabaseGrades.xlsx, DatabaseImage####.JPG)",
        "MOS",
        False,
        (0.0, 5.0),
        Expected(586),
    ),
    "flive": Known(
        "FLIVE (LIVE-FB)",
        "LIVE-FB / PaQ-2-PiQ database (labels_image.csv, voc_emotic_ava/, blur_dataset/, EE371R/)",
        "MOS",
        False,
        (0.0, 100.0),
        Expected(39810),
    ),
    "gfiqa20k": Known(
        "GFIQA-20k",
        "GFIQA-20k (mos.csv, image/)",
        "MOS",
        False,
        (0.0, 1.0),
        Expected(19988),
        checked=False,
    ),
    "agiqa3k": Known(
        "AGIQA-3k",
        "AGIQA-3K (data.csv and the images of AGIQA-3K.zip)",
        "MOS",
        False,
        (0.0, 5.0),
        Expected(2982),
    ),
    "aigciqa2023": Known(
        "AIGCIQA2023",
        "AIGCIQA2023 (DATA/MOS/mosz1.mat, Image/allimg/<n>.png)",
        "MOS",
        False,
        (0.0, 100.0),
        Expected(2400),
        checked=False,
    ),
    "uwiqa": Known(
        "UWIQA",
        "UWIQA (IQA_Value.xlsx, img/<nnnn>.png)",
        "MOS",
        False,
        (0.0, 1.0),
        Expected(890),
        checked=False,
    ),
}


def help_table() -> str:
    """One line per dataset for ``--help``: key, counts and the release it expects."""
    lines = []
    for name, known in KNOWN.items():
        count = f"{known.expected.images}" + (
            f"/{known.expected.refs}" if known.expected.refs else ""
        )
        mark = "" if known.checked else " [unverified]"
        lines.append(f"{name:<12} {count:>9}{mark}  {known.release}")
    return "\n".join(lines)
