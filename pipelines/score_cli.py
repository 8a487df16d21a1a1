"""``iqa-score``: predict the quality of new images with a trained head, end to end."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from cache.console import Command


@click.command(cls=Command)
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--head", "head_ckpt", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Head checkpoint (model.pt from iqa-train-head).")
@click.option("--checkpoint", type=click.Path(exists=True),
              help="Backbone weights the head was trained on (not needed for nss).")
@click.option("--ref", "refs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Reference image(s) for full-reference heads: one, or one per image.")
@click.option("--prompt", "prompt_csv", type=click.Path(exists=True, dir_okay=False),
              help="Prompt head: CSV of image,score pairs (paths relative to the CSV).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def main(images: tuple[str, ...], head_ckpt: str, checkpoint: str | None,
         refs: tuple[str, ...], prompt_csv: str | None, device: str, as_json: bool) -> None:
    """Score IMAGES: run the backbone the head was trained on, then the head.

    The backbone is rebuilt from the head checkpoint's record and checked against it: other
    weights, preprocessing or dtype are refused. 'quality' is the head's output (0-1,
    higher is better); 'score' is the same on the training dataset's scale and orientation.
    """
    from pipelines.score import score_images

    results = score_images(head_ckpt, images, checkpoint=checkpoint, refs=refs,
                           prompt_csv=prompt_csv, device=device)
    if as_json:
        click.echo(json.dumps([asdict(r) for r in results], indent=1))
        return
    width = max(len(r.image) for r in results)
    click.echo(f"{'image':<{width}}  quality    score")
    for r in results:
        click.echo(f"{r.image:<{width}}  {r.quality:7.4f}  {r.score:7.4f}")


if __name__ == "__main__":
    main()
