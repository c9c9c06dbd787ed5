"""`vtk score DIR`: clip-text similarity, motion (codec vectors or flow) and frame hashes per
clip, in sidecars."""

from __future__ import annotations

import click

from vtk.commands.options import DEVICE


@click.command("score")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "model", type=click.Path(exists=True, file_okay=False),
              help="A trained run (vtk train --out RUN) whose towers score clip-text.")
@click.option("--init", "init", help="A saved transformers CLIPModel (local folder, or a hub id "
              "when online) to score clip-text with, untrained on video.")
@click.option("--scores", default=None,
              help="Comma-separated: clip-text, motion (the clip's H.264 motion vectors), "
                   "motion-flow (Farneback optical flow, the reference), hashes. Default: "
                   "clip-text, motion, hashes (clip-text only with --model or --init).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Clips per model forward.")
@click.option("--workers", type=click.IntRange(min=0),
              help="Decode threads (PyAV and OpenCV release the GIL; 0: in the main thread). "
                   "Default: the cores of this rank less one, at most 8.")
@click.option("--device", default="auto", show_default=True, type=DEVICE,
              help="auto, cpu, cuda, cuda:1 ... (under torchrun: each rank its own GPU).")
@click.option("--overwrite", is_flag=True,
              help="Score again shards whose sidecar was written with other settings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(folder, model, init, scores, batch_size, workers, device, overwrite, quiet):
    """Score every clip of the shard set in FOLDER; writes FOLDER/scores/NAME-000000.parquet
    per shard (keyed by __key__; pandas and Hugging Face datasets read it) and the clip
    embeddings beside it. Shards already scored with the same settings are skipped.

    \b
    Examples:
      vtk score shards/train --model runs/fine
      vtk score shards/train --scores motion,hashes
      torchrun --nproc-per-node 8 -m vtk score shards/internvid --init /models/clip-b16
    """
    from vtk.curate.score import score_set

    s = score_set(folder, model=model, init=init, scores=scores, device=device,
                  batch_size=batch_size, workers=workers, overwrite=overwrite, progress=not quiet)
    if s["rank"] != 0:
        return
    repaired = (f"; {s['shards_repaired']} of them rewrite a sidecar that did not match its "
                f"shard" if s.get("shards_repaired") else "")
    click.echo(f"scored {s['samples_scored']} clips in {s['shards_scored']} shards "
               f"({s['shards_skipped']} already done{repaired}) on {s['device']} in "
               f"{s['seconds']:.1f} s")
    for name, st in s["scores"].items():
        click.echo(f"  {name:<20} mean {st['mean']:.4f}  min {st['min']:.4f}  "
                   f"max {st['max']:.4f}  ({st['count']} clips)")
    if s["errors"]:
        click.echo(f"  {s['errors']} clips could not be scored (the sidecar's error column)")
    click.echo(f"wrote {folder}/scores/")
