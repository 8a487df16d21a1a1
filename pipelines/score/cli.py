"""``iqa-score``: predict the quality of new images with a trained head, end to end."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from cache.console import Command

if TYPE_CHECKING:
    from pipelines.score.kinds import Scoring

CSV_FIELDS = ("image", "ref", "score", "quality")


def _range(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected LO,HI, got {value!r}") from None
    if not high > low:
        raise click.BadParameter(f"expected LO < HI, got {value!r}")
    return low, high


@click.command(cls=Command)
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--head", "head_ckpt", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Head checkpoint (run_NN/model.pt of iqa-train-head) or a DP-IQA student.")
@click.option("--checkpoint", type=click.Path(exists=True),
              help="Backbone weights the head was trained on (not needed for nss).")
@click.option("-r", "--ref", "refs", multiple=True, type=click.Path(exists=True),
              help="Full-reference heads: one reference for all, one per image, or a folder "
                   "of references named like the images.")
@click.option("--prompt", "prompt_csv", type=click.Path(exists=True, dir_okay=False),
              help="Prompt head: CSV of image,score rows (paths relative to the CSV), in "
                   "your own scale; predictions come back in that scale and orientation.")
@click.option("--prompt-range", callback=_range, metavar="LO,HI",
              help="The prompt scores' range (default: their own min and max).")
@click.option("--prompt-features", "prompt_store",
              help="A feature store holding the prompt images by id: read, not recomputed.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images per backbone forward (memory grows with it).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False),
              help="Also write the scores to this CSV (new, or an earlier iqa-score CSV).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def main(**opts: Any) -> None:
    """Score IMAGES (files or folders): run the backbone the head was trained on, then the head.

    The backbone is rebuilt from the head checkpoint's record and checked against it: other
    weights, preprocessing or dtypes are refused. 'score' is on the training dataset's scale
    and orientation (the prompt's, with --prompt); 'quality' is the same clipped to 0-1 with
    higher = better.

    \b
    Examples:
      iqa-score photos/ --head runs/koniq/sam_vit_h/sfem_nr/run_00/model.pt --checkpoint sam.pth
      iqa-score dist/ -r refs/ --head runs/kadid/nss/sfem_fr/run_00/model.pt --csv scores.csv
    """
    from cache.outputs import check_output_file, first_line_is
    from pipelines.score.kinds import ScoreRequest
    from pipelines.score.scorers import expand_images, load_scorer

    csv_out = opts["csv_out"]
    if csv_out:
        check_output_file(csv_out, first_line_is(",".join(CSV_FIELDS)), "iqa-score CSV")
    scorer = load_scorer(opts["head_ckpt"], opts["checkpoint"], opts["device"], opts["batch_size"])
    request = ScoreRequest(
        expand_images(opts["images"]),
        refs=opts["refs"],
        prompt_csv=opts["prompt_csv"],
        prompt_range=opts["prompt_range"],
        prompt_store=opts["prompt_store"],
    )
    scoring = scorer.score_files(request)
    _write(scoring, csv_out, opts["as_json"])


def _write(scoring: Scoring, csv_out: str | None, as_json: bool) -> None:
    results, about = scoring.scores, scoring.about
    rows = [{k: asdict(r).get(k, "") for k in CSV_FIELDS} for r in results]
    if csv_out:
        from cache.outputs import atomic_write_text

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(csv_out, buf.getvalue())
    if as_json:
        click.echo(json.dumps({"about": about, "scores": rows}, indent=1))
        return
    orientation = {True: "higher is better", False: "lower is better", None: "as the prompt"}[
        about.get("higher_is_better", True)]
    scale = about.get("scale")
    where = f" on {about.get('dataset')}'s scale {scale[0]:g}..{scale[1]:g}" if scale and (
        scale[0] is not None) else ""
    click.echo(f"# {about['head']} ({about['mode']}): score{where}, {orientation}; "
               "quality 0-1, higher is better")
    width = max(len(r["image"]) for r in rows)
    click.echo(f"{'image':<{width}}  {'score':>9}  quality")
    for r in rows:
        click.echo(f"{r['image']:<{width}}  {r['score']:9.4f}  {r['quality']:7.4f}")
    if csv_out:
        click.echo(f"wrote {csv_out}")


if __name__ == "__main__":
    main()
