"""`vtk ablate captions|mask|filter DIR --out OUT`: train and evaluate every arm of an
ablation."""

from __future__ import annotations

import click

from vtk.ablate import FILTER_RULES
from vtk.commands.options import CAPTIONS, DEVICE
from vtk.commands.train import default


def _train_options(f):
    """Training and evaluation options shared by both ablations (passed to every arm)."""
    opts = [
        click.option("--out", required=True, type=click.Path(file_okay=False),
                     help="Folder for the arms' run directories."),
        click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Seeds per arm."),
        click.option("--seed", default=default("seed"), show_default=True, type=click.IntRange(min=0),
                     help="First seed."),
        click.option("--bench", "benches", multiple=True,
                     help="Benchmarks to evaluate (see vtk eval). Default: synth for the "
                          "synthetic world; on real video, name them."),
        click.option("--model", default=default("model"), show_default=True,
                     type=click.Choice(["tiny", "b16", "l14"])),
        click.option("--text", default=default("text"), show_default=True,
                     type=click.Choice(["auto", "tiny", "minilm", "clip"]),
                     help="auto = clip with --init, else the offline MiniLM."),
        click.option("--init", default=None, help="CLIP weights (local path or hub id)."),
        click.option("--frames", default=default("frames"), show_default=True, type=click.IntRange(min=1)),
        click.option("--size", default=None, type=click.IntRange(min=1),
                     help="Input size (model default)."),
        click.option("--steps", default=default("steps"), show_default=True, type=click.IntRange(min=0)),
        click.option("--unmasked-steps", default=default("unmasked_steps"), show_default=True,
                     type=click.IntRange(min=0)),
        click.option("--batch-size", default=None, type=click.IntRange(min=1)),
        click.option("--lr", default=None, type=click.FloatRange(min=0, min_open=True)),
        click.option("--device", default=default("device"), show_default=True, type=DEVICE),
        click.option("--backend", default=default("backend"), show_default=True),
        click.option("--cache", default=None, type=click.Path(file_okay=False),
                     help="Decoded-frame cache folder (decode a small corpus once)."),
        click.option("--workers", default=default("workers"), show_default=True, type=click.IntRange(min=0)),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _base(kw, fixed, data):
    base = {k: kw[k] for k in ("model", "text", "init", "frames", "size", "steps",
                               "unmasked_steps", "batch_size", "lr", "device", "backend",
                               "cache", "workers") if kw[k] is not None}
    base.update(fixed, data=data)
    return base


def _run(ablation, values, data, kw, fixed):
    from rich.console import Console

    from vtk.ablate import plan, run_arms

    console = Console()
    arms = plan(ablation, values, kw["seeds"], _base(kw, fixed, data), seed0=kw["seed"])
    runs = run_arms(arms, kw["out"], benches(kw, data),
                    eval_opts={"device": kw["device"], "backend": kw["backend"]},
                    log=lambda line: console.print(f"[cyan]ablate[/] {line}", highlight=False))
    console.print(f"[green]{len(runs)} runs under {kw['out']}[/]: vtk report {kw['out']}")


def benches(kw, data) -> list[str]:
    """The arms' benchmarks: --bench, else synth for the synthetic world (before any arm
    trains, one line naming how to give them for real video)."""
    from vtk.eval.benchmarks import default_benches

    return list(kw["benches"]) or default_benches(data=data)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.group("ablate")
def command():
    """Run the caption-scale or masking-ratio ablation (train + evaluate every arm)."""


@command.command("captions")
@click.argument("data", type=click.Path(exists=True))
@click.option("--arms", "--settings", "settings", default="coarse,fine,both", show_default=True,
              help="Caption arms: coarse, fine, both (fused), mixed (random pick per view), or "
                   "captions by name: vlm, a caption layer NAME (vtk caption --as NAME).")
@click.option("--mask", default=default("mask"), show_default=True,
              type=click.FloatRange(0, 1, max_open=True), help="Masking ratio for every arm.")
@_train_options
def captions(data, settings, mask, **kw):
    """Train on coarse, fine and both captions of one shard set (built with --captions both),
    and on caption layers beside them.

    \b
    Examples:
      vtk ablate captions shards/train --out runs/captions --seeds 2
      vtk caption shards/train --as qwen --fine-model vlm:Qwen/Qwen2.5-VL-7B-Instruct
      vtk ablate captions shards/train --out runs/captions --arms coarse,fine,both,qwen
    """
    arms = _split(settings)
    for arm in arms:
        CAPTIONS.convert(arm, None, click.get_current_context())
    _run("captions", arms, data, kw, {"mask": mask})


@command.command("mask")
@click.argument("data", type=click.Path(exists=True))
@click.option("--ratios", default="0,0.5,0.7,0.9", show_default=True)
@click.option("--captions", "caps", default=default("captions"), show_default=True,
              type=CAPTIONS)
@_train_options
def mask(data, ratios, caps, **kw):
    """Train at several video token masking ratios (0 is the unmasked baseline).

    \b
    Example:
      vtk ablate mask shards/train --out runs/mask --ratios 0,0.5,0.7,0.9
    """
    _run("mask", _split(ratios), data, kw, {"captions": caps})




@command.command("filter")
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--rules", "rules", default=FILTER_RULES,
              show_default=True,
              help="One arm per ';': none, or vtk filter rules joined by ',' or '+' "
                   "(min:S=X, max:S=X, top:S=F, dedup:frames, dedup:T = dedup:embed:T).")
@click.option("--clean", default=None, type=click.Path(exists=True, file_okay=False),
              help="A clean shard set (the noise-free twin of DATA) trained as an arm "
                   "beside: what filtering should recover.")
@click.option("--scorer", default=None, type=click.Path(exists=True, file_okay=False),
              help="Run folder whose model scores DATA (default: the 'none' arm's run).")
@click.option("--captions", "caps", default=default("captions"), show_default=True,
              type=CAPTIONS)
@click.option("--mask", default=default("mask"), show_default=True,
              type=click.FloatRange(0, 1, max_open=True), help="Masking ratio for every arm.")
@_train_options
def filter_(data, rules, clean, scorer, caps, mask, **kw):
    """Train on what each filter keeps of one shard set, at the same step count.

    \b
    Example:
      vtk shard 'synth:train?n=4000&noise=0.3&dups=0.1' --out shards/noisy --captions fine
      vtk shard 'synth:train?n=4000' --out shards/clean --captions fine
      vtk ablate filter shards/noisy --out runs/filter --clean shards/clean \\
          --rules "none; top:clip-text=0.3; dedup:frames"
    """
    from rich.console import Console

    from vtk.ablate import parse_arm_rules, run_filter

    console = Console()
    arms = parse_arm_rules(rules)
    runs = run_filter(data, kw["out"], arms, kw["seeds"],
                      _base(kw, {"mask": mask, "captions": caps}, data),
                      benches(kw, data), seed0=kw["seed"], scorer=scorer, clean=clean,
                      eval_opts={"device": kw["device"], "backend": kw["backend"]},
                      log=lambda line: console.print(f"[cyan]ablate[/] {line}",
                                                     highlight=False))
    console.print(f"[green]{len(runs)} runs under {kw['out']}[/]: vtk report {kw['out']}")


@command.command("wiseft")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the arms (one per alpha).")
@click.option("--alphas", default="0,0.25,0.5,0.75,1", show_default=True,
              help="Shares of the trained weights (the rest the init's); 1 is the trained run.")
@click.option("--init", default=None,
              help="The weights to interpolate with: a CLIP folder or viclip:PATH (default: "
                   "the run's --init).")
@click.option("--protocol", default="plain", show_default=True,
              type=click.Choice(["plain", "internvid"]),
              help="Evaluation protocol of every arm (vtk eval --protocol).")
@click.option("--bench", "bench", multiple=True,
              help="Benchmarks to evaluate (see vtk eval). Default: synth for a run trained on "
                   "the synthetic world; for real video, name them.")
@click.option("--device", default=default("device"), show_default=True, type=DEVICE)
@click.option("--backend", default=default("backend"), show_default=True)
def wiseft(run, out, alphas, init, protocol, bench, device, backend):
    """Evaluate a trained run at several WiSE-FT shares of its weights: (1 - alpha) * init +
    alpha * trained. Nothing is trained.

    \b
    Example:
      vtk ablate wiseft runs/b16 --out runs/wiseft --init ~/clip-vit-base-patch16 \\
          --alphas 0,0.5,1 --bench msrvtt=~/data/msrvtt
    """
    from rich.console import Console

    from vtk.ablate import run_wiseft
    from vtk.eval.benchmarks import default_benches

    console = Console()
    runs = run_wiseft(run, out, _split(alphas), list(bench) or default_benches(run),
                      init=init, protocol=protocol,
                      eval_opts={"device": device, "backend": backend},
                      log=lambda line: console.print(f"[cyan]ablate[/] {line}", highlight=False))
    console.print(f"[green]{len(runs)} arms under {out}[/]: vtk report {out}")
