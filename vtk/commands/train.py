"""`vtk train DIR --out RUN`: train ViCLIP on a shard set, with video token masking."""

from __future__ import annotations

import math

import click
from click.core import ParameterSource

from vtk.commands.options import CAPTIONS, DEVICE, defaults_of
from vtk.errors import VtkError
from vtk.train.config import DEFAULTS, TrainConfig

default = defaults_of(TrainConfig)  # the one source of vtk train's and vtk ablate's defaults


def per_size(name: str) -> str:
    """The per-size default of an optimisation setting as --help shows it (config.DEFAULTS)."""
    return "[default: " + ", ".join(f"{v[name]:g} {size}" for size, v in DEFAULTS.items()) + "]"


@click.command("train")
@click.argument("data", metavar="DIR...", nargs=-1)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--mask", default=default("mask"), show_default=True, type=click.FloatRange(0, 1, max_open=True), help="share of video tokens dropped in training")
@click.option("--captions", default=default("captions"), show_default=True, type=CAPTIONS,
              help="training text: coarse, fine, both (fused), mixed (random pick each visit), "
                   "txt, or a caption by name: vlm, a caption layer NAME (vtk caption --as "
                   "NAME), NAME.fine")
@click.option("--flip", default=default("flip"), show_default=True, type=click.Choice(["swap", "plain", "off"]),
              help="mirror half the training views; swap also swaps left/right in their "
                   "captions, plain mirrors pixels only (ViCLIP)")
@click.option("--model", default=default("model"), show_default=True, type=click.Choice(["tiny", "b16", "l14"]), help="video tower size")
@click.option("--text", default=default("text"), show_default=True, type=click.Choice(["auto", "tiny", "minilm", "clip"]),
              help="text tower; auto = clip with --init, else the offline MiniLM")
@click.option("--init", help="a saved transformers CLIPModel (folder or hub id) to inflate")
@click.option("--freeze-text/--train-text", default=None,
              help="freeze the text tower (default: pretrained towers frozen, as ViCLIP)")
@click.option("--frames", default=default("frames"), show_default=True, type=click.IntRange(min=1), help="frames per clip")
@click.option("--size", type=click.IntRange(min=1), help="pixels (square)  [32 for tiny, 224 otherwise]")
@click.option("--steps", default=default("steps"), show_default=True, type=click.IntRange(min=0), help="optimiser steps with masking")
@click.option("--unmasked-steps", default=default("unmasked_steps"), show_default=True, type=click.IntRange(min=0), help="then this many steps without masking")
@click.option("--unmasked-lr-scale", default=default("unmasked_lr_scale"), show_default=True, type=click.FloatRange(min=0), help="lr share in the unmasked stage")
@click.option("--batch-size", type=click.IntRange(min=1), help="clips per process and micro-step  " + per_size("batch_size"))
@click.option("--accum", default=default("accum"), show_default=True, type=click.IntRange(min=1), help="gradient accumulation steps")
@click.option("--fsdp", is_flag=True, default=None, help="under torchrun: shard parameters, gradients and optimiser state over the ranks (torch's fully_shard, FSDP2) instead of DDP; for l14 on small GPUs (docs/training.md)")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="peak learning rate  " + per_size("lr"))
@click.option("--warmup", default=default("warmup"), show_default=True, type=click.FloatRange(min=0), help="warmup: share of --steps if < 1, else steps")
@click.option("--weight-decay", type=click.FloatRange(min=0), help="AdamW weight decay  " + per_size("weight_decay"))
@click.option("--grad-clip", default=default("grad_clip"), show_default=True,
              type=click.FloatRange(min=0), help="clip the global gradient norm to this; 0 = off")
@click.option("--grad-checkpointing", is_flag=True, default=None,
              help="recompute activations in backward (less memory for b16 / l14)")
@click.option("--amp", default=default("amp"), show_default=True, type=click.Choice(["auto", "bf16", "fp16", "off"]),
              help="mixed precision on GPU")
@click.option("--backend", default=default("backend"), show_default=True, help="decoder: auto, dali, torchcodec, pyav, decord")
@click.option("--cache", type=click.Path(file_okay=False),
              help="decoded-frame cache folder: decode every clip once (small corpora)")
@click.option("--max-sample-bytes", default=default("max_sample_bytes"), show_default=True, type=click.IntRange(min=1),
              help="skip (unread, counted) samples whose tar members together declare more "
                   "bytes")
@click.option("--resampled", is_flag=True, default=None,
              help="draw shards with replacement (webdataset/open_clip); an epoch is "
                   "--train-num-samples samples")
@click.option("--train-num-samples", type=click.IntRange(min=1),
              help="samples per epoch over all ranks (with --resampled or --data-weights)")
@click.option("--data-weights", callback=lambda ctx, p, v: parse_weights(v),
              help="one weight per shard set DIR, e.g. 0.7,0.3: that share of the shard "
                   "draws (implies --resampled)")
@click.option("--sampling", default=default("sampling"), show_default=True,
              type=click.Choice(["uniform", "div"]),
              help="div: weight each clip by 1 / (clips of its source video), as "
                   "InternVid-10M-DIV")
@click.option("--device", default=default("device"), show_default=True, type=DEVICE, help="auto, cpu, cuda, cuda:N")
@click.option("--workers", default=default("workers"), show_default=True, type=click.IntRange(min=0), help="loader workers per process")
@click.option("--seed", default=default("seed"), show_default=True, type=click.IntRange(min=0), help="random seed")
@click.option("--checkpoint-every", default=default("checkpoint_every"), show_default=True, type=click.IntRange(min=1), help="steps between checkpoints")
@click.option("--log-every", default=default("log_every"), show_default=True,
              type=click.IntRange(min=1), help="steps between metrics lines (and loss reads)")
@click.option("--resume", is_flag=True, default=None,
              help="continue the run in --out exactly where its checkpoint left it")
@click.option("--overwrite", is_flag=True, default=None, help="replace a run already in --out")
@click.option("--stop-after", type=click.IntRange(min=1), hidden=True, help="stop (checkpointed) at this step")
@click.option("--report-to", default=default("report_to"), metavar="tensorboard,wandb",
              callback=lambda ctx, p, v: report_to(v),
              help="also log metrics.jsonl's figures to these trackers: tensorboard "
                   "(RUN/tensorboard/; the tensorboard extra), wandb (the wandb extra)")
@click.option("--quiet", is_flag=True, default=None, help="no progress bar")
def command(data, **opts):
    """Train ViCLIP on the shard set DIR (or several); writes config.json, metrics.jsonl, summary.json and
    checkpoint.pt to --out. Runs as DDP under torchrun.

    \b
    Examples:
      vtk train shards/train --out runs/m50 --mask 0.5 --captions fine --steps 2000
      vtk train shards/a shards/b --data-weights 0.7,0.3 --train-num-samples 100000 \\
          --out runs/mix
      vtk train --out runs/m50 --resume
      torchrun --nproc-per-node 4 -m vtk train shards/train --out runs/ddp --model b16 \\
          --init openai/clip-vit-base-patch16 --mask 0.9
      torchrun --nproc-per-node 8 -m vtk train shards/train --out runs/l14 --model l14 --fsdp
    """
    from rich.console import Console

    from vtk.train import train
    from vtk.train.dist import cleanup

    # only what the command line gave: a resumed run keeps its saved config.json otherwise
    ctx = click.get_current_context()
    config = {k: v for k, v in opts.items()
              if v is not None and ctx.get_parameter_source(k) is not ParameterSource.DEFAULT}
    if data:
        config["data"] = data[0] if len(data) == 1 else list(data)
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


def report_to(text: str | None) -> list[str] | None:
    """``"tensorboard,wandb"`` -> the tracker names; an unknown one names the known ones."""
    from vtk.train.trackers import parse

    if text is None:
        return None
    try:
        return parse(text)
    except VtkError as e:
        raise click.BadParameter(str(e).removeprefix("--report-to "), param_hint="--report-to"
                                 ) from None


def parse_weights(text: str | None) -> list[float] | None:
    """``"0.7,0.3"`` -> [0.7, 0.3]; a bad list is one line naming the option."""
    if text is None:
        return None
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give numbers separated by commas, e.g. 0.7,0.3",
                                 param_hint="--data-weights") from None
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise click.BadParameter(f"{text!r}: weights must be finite numbers >= 0, not all 0",
                                 param_hint="--data-weights")
    return weights


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
