"""What is known about each supported dataset: its release, labels and official counts.

One literal table, :data:`KNOWN`, used by the importers (label kind, orientation, range,
counts), by the generic CSV and pyiqa paths (``--name live`` takes LIVE's labels from
here), and by ``iqa-data import --help``.

Every entry names the source of its expected counts (``source``): the papers' dataset
tables (SAM-IQA Table 2, PromptIQA Table 1, DP-IQA section IV-A) and, for FLIVE and
AGIQA-3k, the rows of the label files the dataset authors publish. Where published counts
disagree (GFIQA-20k), ``other_counts`` lists the others with their sources, and a count
error says which one the copy matches. Counts marked ``checked=False`` rest on the papers
and on public loaders only: they could not be compared with a download here.

LIVE's ``score_range`` is not the nominal 0..100: the realigned DMOS of the release runs
from -2.64 to 111.8 (24 of 779 scores outside 0..100, as measured on the release when
this was decided; not re-measured here), so the range is -3..112, which covers the data
without clipping. Clipping would tie those images at the ends of the scale and change
the ranks that SROCC is computed on.
"""

from __future__ import annotations

from dataclasses import dataclass

from iqadata.importers._common import Expected
from iqadata.manifest import DatasetInfo


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
        source: where ``expected`` comes from.
        checked: False where layout or count could not be compared with a download.
        other_counts: other published image counts, each with its source.
    """

    title: str
    release: str
    kind: str
    lower_better: bool
    score_range: tuple[float, float]
    expected: Expected
    source: str
    checked: bool = True
    other_counts: tuple[tuple[int, str], ...] = ()

    def count_note(self, found: int) -> str:
        """Where the expected image count comes from, and which published count ``found``
        matches (for the count error)."""
        note = f"the count of {self.source}"
        matched = [src for n, src in self.other_counts if n == found]
        if matched:
            note += f"; {found} is the count of {matched[0]}"
        others = [f"{n} ({src})" for n, src in self.other_counts if n != found]
        if others:
            note += f"; other published counts: {', '.join(others)}"
        return note

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
        (-3.0, 112.0),
        Expected(779, 29),
        "SAM-IQA Table 2 and PromptIQA Table 1 (982 label entries less 203 reference copies)",
    ),
    "csiq": Known(
        "CSIQ",
        "CSIQ (csiq.DMOS.xlsx, src_imgs/, dst_imgs/<type>/)",
        "DMOS",
        True,
        (0.0, 1.0),
        Expected(866, 30),
        "SAM-IQA Table 2 and PromptIQA Table 1",
    ),
    "tid2013": Known(
        "TID2013",
        "TID2013 (mos_with_names.txt, reference_images/, distorted_images/)",
        "MOS",
        False,
        (0.0, 9.0),
        Expected(3000, 25),
        "SAM-IQA Table 2 and PromptIQA Table 1 (25 references x 24 types x 5 levels)",
    ),
    "kadid10k": Known(
        "KADID-10k",
        "KADID-10k (dmos.csv, images/)",
        "MOS",
        False,
        (1.0, 5.0),
        Expected(10125, 81),
        "SAM-IQA Table 2 and PromptIQA Table 1 (81 references x 25 types x 5 levels)",
    ),
    "pipal": Known(
        "PIPAL",
        "PIPAL public training set of NTIRE 2021 (Train_Label/*.txt, Train_Ref/, Distortion_1..4/"
        " or NTIRE 2022's Distortion1..4/)",
        "MOS",
        False,
        (800.0, 2000.0),
        Expected(23200, 200),
        "the PIPAL authors' repository and public loaders (200 references x 116 images)",
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
        "PromptIQA Table 1 and DP-IQA section IV-A",
    ),
    "spaq": Known(
        "SPAQ",
        "SPAQ (Annotations/MOS and Image attribute scores.xlsx, TestImage/)",
        "MOS",
        False,
        (0.0, 100.0),
        Expected(11125),
        "PromptIQA Table 1 and DP-IQA section IV-A",
    ),
    "livec": Known(
        "LIVE Challenge",
        "LIVE In the Wild Image Quality Challenge Database"
        " (Data/AllImages_release.mat, Data/AllMOS_release.mat, Images/)",
        "MOS",
        False,
        (0.0, 100.0),
        Expected(1162),
        "PromptIQA Table 1 and DP-IQA section IV-A (1,169 entries less 7 training images)",
    ),
    "bid": Known(
        "BID",
        "BID (DatabaseGrades.xlsx, DatabaseImage####.JPG)",
        "MOS",
        False,
        (0.0, 5.0),
        Expected(586),
        "PromptIQA Table 1",
    ),
    "flive": Known(
        "FLIVE (LIVE-FB)",
        "LIVE-FB / PaQ-2-PiQ database (labels_image.csv, voc_emotic_ava/, blur_dataset/, EE371R/;"
        " official split: labels640.csv, labels=640_padded.csv)",
        "MOS",
        False,
        (0.0, 100.0),
        Expected(39810),
        "the rows of labels_image.csv in the PaQ-2-PiQ repository and DP-IQA section IV-A",
    ),
    "gfiqa20k": Known(
        "GFIQA-20k",
        "GFIQA-20k (mos.csv, image/)",
        "MOS",
        False,
        (0.0, 1.0),
        Expected(19988),
        "PromptIQA Table 1 and README",
        checked=False,
        other_counts=(
            (20000, "the GFIQA-20k paper, Su et al., IEEE TMM 2023 (PromptIQA ref. 33)"),
            (19998, "PromptIQA's dataset_info.json"),
        ),
    ),
    "agiqa3k": Known(
        "AGIQA-3k",
        "AGIQA-3K (data.csv and the images of AGIQA-3K.zip)",
        "MOS",
        False,
        (0.0, 5.0),
        Expected(2982),
        "PromptIQA Table 1 and the rows of data.csv in the AGIQA-3k repository",
    ),
    "aigciqa2023": Known(
        "AIGCIQA2023",
        "AIGCIQA2023 (DATA/MOS/mosz1.mat, Image/allimg/<n>.png)",
        "MOS",
        False,
        (0.0, 100.0),
        Expected(2400),
        "PromptIQA Table 1",
        checked=False,
    ),
    "uwiqa": Known(
        "UWIQA",
        "UWIQA (IQA_Value.xlsx, img/<nnnn>.png)",
        "MOS",
        False,
        (0.0, 1.0),
        Expected(890),
        "PromptIQA Table 1",
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
