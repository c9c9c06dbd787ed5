"""`vtk demo`: the whole study on the synthetic world, offline, on a laptop CPU.

synthetic corpus -> shards with coarse + fine captions -> decoded-frame cache -> caption
ablation (coarse / fine / both) and masking ablation (0 / 0.5 / 0.7 / 0.9) with the tiny model
and the frozen pretrained MiniLM text tower -> zero-shot evaluation on all eight synthetic
benchmarks -> report tables, JSON/markdown exports and the plot.

``vtk demo --filter`` runs the third ablation on the same plan: the same corpus made 30% noisy
(``noise=0.3``: captions that belong to another clip; ``dups=0.1``: planted near-duplicates),
filtered three ways (``none``, ``top:clip-text=0.3``, ``dedup:frames``) and trained beside the
clean corpus (the caption ablation's ``fine`` arm, reused when ``vtk demo`` ran in the same
folder). It is a flag of its own because the whole demo with it takes about twice as long
(docs/results/filter-ablation.md has the measured times; README, "How long the demo takes",
those of vtk demo and vtk demo --quick).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from vtk.ablate import FILTER_RULES

# Two sizes of the same study; their measured times: README, "How long the demo takes" (each run
# writes its own to OUT/demo.json with the machine's CPU and load).
PLANS = {
    # 800 steps: at 300 the tiny tower had learned appearance and colour change but hardly any
    # motion (synth-k400 top-1 0.15 with fine captions); at 900 it reached 0.32
    "full": dict(n=4000, shard_size=64, steps=800, unmasked_steps=0, batch_size=64,
                 bench_n=None, seeds=1),
    "quick": dict(n=384, shard_size=48, steps=30, unmasked_steps=0, batch_size=32,
                  bench_n=40, seeds=1),
}
CAPTION_ARMS = ("coarse", "fine", "both")
NOISE = "noise=0.3&dups=0.1"  # the noisy twin of the training corpus
MASK_ARMS = ("0", "0.5", "0.7", "0.9")


def bench_specs(n: int | None) -> list[str]:
    from vtk.sources.synth import BENCHMARKS

    if n is None:
        return ["synth"]
    return [f"synth:{b.removeprefix('synth-')}?n={n}" for b in BENCHMARKS]


def quick_note(arms, steps: int) -> str:
    """What a --quick run's numbers mean: too few steps to learn, so chance is the expected
    result (a smoke test of the pipeline, not a study)."""
    chance = {}
    for arm in arms:
        for col, level in arm.chance.items():
            if col.endswith(("_top1", "_t2v_r1")):
                chance.setdefault(col, level)
    levels = ", ".join(f"{col.split('_')[0]} {100 * level:.1f}%" for col, level in
                       chance.items())  # in the benchmarks' own order
    return (f"--quick trains {steps} steps per arm: scores near chance"
            f"{f' ({levels})' if levels else ''} are expected; it checks that the pipeline runs. "
            f"The full demo (vtk demo) trains long enough to rise above chance.")


@click.command("demo")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output folder  [runs/demo, or runs/demo-quick with --quick]")
@click.option("--quick", is_flag=True, help="A smoke run (smaller corpus, fewer steps).")
@click.option("--seeds", default=None, type=int, help="Seeds per arm (plan default: 1).")
@click.option("--steps", default=None, type=int, help="Training steps per arm.")
@click.option("--clips", default=None, type=click.IntRange(min=8),
              help="Clips in the training corpus (plan default: 4000, --quick 384).")
@click.option("--workers", default=2, show_default=True)
@click.option("--filter", "filter_", is_flag=True,
              help=f"Run the filter ablation instead ({FILTER_RULES}) on a {NOISE} twin of "
                   f"the corpus, beside the clean corpus.")
def command(out, quick, seeds, steps, clips, workers, filter_):
    """The synthetic study end to end: shards, both ablations, evaluation, report.

    How long each takes, as measured: README, "How long the demo takes"; a run writes its own
    time, CPU and load to OUT/demo.json.

    \b
    Example:
      vtk demo --out runs/demo      # the study
      vtk demo --quick              # a smoke run of the same pipeline
      vtk demo --filter             # the filter ablation on a 30%-noisy corpus
    """
    import torch
    from rich.console import Console

    from vtk import report
    from vtk.ablate import parse_arm_rules, plan, run_arms, run_filter
    from vtk.errors import VtkError
    from vtk.fileio import read_json, write_json
    from vtk.progress import ShardProgress
    from vtk.shards import build_shard_set
    from vtk.train import meters

    console = Console()
    cfg = dict(PLANS["quick" if quick else "full"])
    cfg["seeds"] = seeds or cfg["seeds"]
    cfg["steps"] = steps or cfg["steps"]
    cfg["n"] = clips or cfg["n"]
    out = Path(out or ("runs/demo-quick" if quick else "runs/demo"))
    out.mkdir(parents=True, exist_ok=True)
    load_before = meters.load_snapshot()
    t0 = time.perf_counter()
    say = lambda line: console.print(f"[cyan]demo[/] {line}", highlight=False)  # noqa: E731

    # 1. the training corpus, captioned at both scales (one shard set serves every arm)
    shards = out / "shards" / "train"
    spec = f"synth:train?n={cfg['n']}&size={cfg['shard_size']}&seed=0"
    built = (read_json(shards / "index.json") or {}).get("sources")
    if built is not None and built != [spec]:
        raise VtkError(f"{shards}: built from {built[0]}, not {spec} (another demo plan); "
                       f"use another --out")
    if built is None:
        say(f"sharding {spec} with coarse + fine captions -> {shards}")
        with ShardProgress(False, cfg["n"]) as progress:
            build_shard_set([spec], str(shards), captions="both", clip_mode="whole",
                            workers=workers, resume=True, on_result=progress.update)
    else:
        say(f"shards already built: {shards}")

    # 2. both ablations; the frame cache decodes the corpus once for all arms
    # a 256-d joint space keeps more of MiniLM's 384-d geometry than tiny's default 64
    base = dict(data=str(shards), model="tiny", text="minilm", embed_dim=256, steps=cfg["steps"],
                unmasked_steps=cfg["unmasked_steps"], batch_size=cfg["batch_size"],
                cache=str(out / "cache"), workers=workers, device="cpu", quiet=False)
    benches = bench_specs(cfg["bench_n"])
    # a line per benchmark step: a log (not a terminal) never goes silent for long
    eval_opts = {"device": "cpu", "cache": str(out / "bench-cache"),
                 "log": lambda line: say(f"  {line}")}
    if filter_:
        # the noisy twin: the same clips but where the noise is; fine captions (txt = fine, so
        # clip-text scores the caption the arms train on)
        noisy = out / "shards" / "noisy"
        nspec = f"{spec}&{NOISE}"
        built = (read_json(noisy / "index.json") or {}).get("sources")
        if built is not None and built != [nspec]:
            raise VtkError(f"{noisy}: built from {built[0]}, not {nspec}; use another --out")
        if built is None:
            say(f"sharding {nspec} with fine captions -> {noisy}")
            with ShardProgress(False, cfg["n"]) as progress:
                build_shard_set([nspec], str(noisy), captions="fine", clip_mode="whole",
                                workers=workers, resume=True, on_result=progress.update)
        run_filter(noisy, out / "runs", parse_arm_rules(FILTER_RULES), cfg["seeds"],
                   dict(base, data=str(noisy), mask=0.0, captions="fine"), benches,
                   clean=shards, eval_opts=eval_opts, log=say)
    else:
        arms = (plan("captions", list(CAPTION_ARMS), cfg["seeds"], dict(base, mask=0.0))
                + plan("mask", list(MASK_ARMS), cfg["seeds"], dict(base, captions="fine")))
        run_arms(arms, out / "runs", benches, eval_opts=eval_opts, log=say)

    # 3. the report
    arms_found = report.collect([out / "runs"])
    report.render_table(arms_found, console=console)
    (out / "report.md").write_text(report.render_text(arms_found, "markdown") + "\n")
    (out / "report.json").write_text(report.render_text(arms_found, "json") + "\n")
    plot = report.plot(arms_found, out / "ablations.png")
    wall = time.perf_counter() - t0
    write_json(out / ("demo-filter.json" if filter_ else "demo.json"),
               {"plan": cfg, "wall_s": round(wall, 1), "quick": quick, "filter": filter_,
                "cpu": meters.device_name(torch.device("cpu")),
                "load": meters.load_report(load_before, meters.load_snapshot())})
    say(f"done in {wall / 60:.1f} min: {out / 'report.md'}, {out / 'report.json'}, {plot}")
    if quick:
        say(quick_note(arms_found, cfg["steps"]))
