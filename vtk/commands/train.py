"""`vtk train DIR --out RUN`: train ViCLIP on a shard set, with video token masking."""

from __future__ import annotations

import click

from vtk.commands.options import DEVICE
from vtk.errors import VtkError


@click.command("train")
@click.argument("data", metavar="DIR", required=False)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--mask", type=click.FloatRange(0, 1, max_open=True), help="share of video tokens dropped in training  [0]")
@click.option("--captions", type=click.Choice(["coarse", "fine", "both", "mixed", "txt"]),
              help="training text: coarse, fine, both (fused), mixed (random pick each visit)  [fine]")
@click.option("--flip", type=click.Choice(["swap", "plain", "off"]),
              help="mirror half the training views; swap also swaps left/right in their "
                   "captions, plain mirrors pixels only (ViCLIP)  [swap]")
@click.option("--model", type=click.Choice(["tiny", "b16", "l14"]), help="video tower size  [tiny]")
@click.option("--text", type=click.Choice(["auto", "tiny", "minilm", "clip"]),
              help="text tower; auto = clip with --init, else the offline MiniLM  [auto]")
@click.option("--init", help="a saved transformers CLIPModel (folder or hub id) to inflate")
@click.option("--freeze-text/--train-text", default=None,
              help="freeze the text tower (default: pretrained towers frozen, as ViCLIP)")
@click.option("--frames", type=click.IntRange(min=1), help="frames per clip  [8]")
@click.option("--size", type=click.IntRange(min=1), help="pixels (square)  [32 for tiny, 224 otherwise]")
@click.option("--steps", type=click.IntRange(min=0), help="optimiser steps with masking  [300]")
@click.option("--unmasked-steps", type=click.IntRange(min=0), help="then this many steps without masking  [0]")
@click.option("--unmasked-lr-scale", type=click.FloatRange(min=0), help="lr share in the unmasked stage  [0.1]")
@click.option("--batch-size", type=click.IntRange(min=1), help="clips per process and micro-step  [64 tiny, 32]")
@click.option("--accum", type=click.IntRange(min=1), help="gradient accumulation steps  [1]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="peak learning rate  [1e-3 tiny, 2e-4 b16, 4e-4 l14]")
@click.option("--warmup", type=click.FloatRange(min=0), help="warmup: share of --steps if < 1, else steps  [0.08]")
@click.option("--weight-decay", type=click.FloatRange(min=0), help="AdamW weight decay  [0.05 tiny, 0.2]")
@click.option("--grad-checkpointing", is_flag=True, default=None,
              help="recompute activations in backward (less memory for b16 / l14)")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]),
              help="mixed precision on GPU  [auto]")
@click.option("--backend", help="decoder: auto, dali, torchcodec, pyav, decord  [auto]")
@click.option("--cache", type=click.Path(file_okay=False),
              help="decoded-frame cache folder: decode every clip once (small corpora)")
@click.option("--max-sample-bytes", type=click.IntRange(min=1),
              help="skip (unread, counted) samples whose tar members together declare more "
                   "bytes  [268435456 = 256 MiB]")
@click.option("--device", type=DEVICE, help="auto, cpu, cuda, cuda:N  [auto]")
@click.option("--workers", type=click.IntRange(min=0), help="loader workers per process  [2]")
@click.option("--seed", type=click.IntRange(min=0), help="random seed  [0]")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="steps between checkpoints  [100]")
@click.option("--resume", is_flag=True, default=None,
              help="continue the run in --out exactly where its checkpoint left it")
@click.option("--overwrite", is_flag=True, default=None, help="replace a run already in --out")
@click.option("--stop-after", type=click.IntRange(min=1), hidden=True, help="stop (checkpointed) at this step")
@click.option("--quiet", is_flag=True, default=None, help="no progress bar")
def command(data, **opts):
    """Train ViCLIP on the shard set DIR; writes config.json, metrics.jsonl, summary.json and
    checkpoint.pt to --out. Runs as DDP under torchrun.

    \b
    Examples:
      vtk train shards/train --out runs/m50 --mask 0.5 --captions fine --steps 2000
      vtk train --out runs/m50 --resume
      torchrun --nproc-per-node 4 -m vtk train shards/train --out runs/ddp --model b16 \\
          --init openai/clip-vit-base-patch16 --mask 0.9
    """
    from rich.console import Console

    from vtk.train import train
    from vtk.train.dist import cleanup

    config = {k: v for k, v in opts.items() if v is not None}
    if data is not None:
        config["data"] = data
    elif not config.get("resume"):
        raise VtkError("no shard set: vtk train DIR --out RUN (or --out RUN --resume)")
    try:
        summary = train(config)
    finally:
        cleanup()
    if int(__import__("os").environ.get("RANK", "0")) == 0 and not config.get("quiet"):
        c = Console()
        if summary.get("nothing_to_do"):
            c.print(f"[bold]{opts['out']}[/]: already complete at step {summary['steps']}; "
                    "nothing to train (pass a larger --steps to train on)")
        c.print(f"[bold]{opts['out']}[/]: {describe(summary)}", highlight=False)
        if not summary["complete"]:
            c.print(f"stopped early; continue with: vtk train --out {opts['out']} --resume")


def describe(summary: dict) -> str:
    """One line of a run's summary; figures a summary lacks are left out."""
    parts = [f"{summary['steps']} steps in {summary.get('train_time_s') or 0:.1f} s"]
    if summary.get("clips_per_s") is not None:
        parts.append(f"{summary['clips_per_s']:.1f} clips/s")
    if summary.get("peak_mem_bytes") is not None:
        on = f" on {summary['device']}" if summary.get("device") else ""
        parts.append(f"peak memory {summary['peak_mem_bytes'] / 2**20:.0f} MiB{on}")
    if summary.get("final_loss") is not None:
        parts.append(f"final loss {summary['final_loss']:.3f}")
    return ", ".join(parts)
