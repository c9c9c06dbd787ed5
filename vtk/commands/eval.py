"""`vtk eval RUN`: zero-shot classification and retrieval; writes RUN/eval.json."""

from __future__ import annotations

from pathlib import Path

import click

from vtk.commands.options import DEVICE, defaults_of
from vtk.errors import VtkError
from vtk.eval.config import EvalConfig
from vtk.eval.protocol import PROTOCOLS

default = defaults_of(EvalConfig)  # the one source of vtk eval's defaults


def parse_templates(value: str | None):
    """kinetics | none | a file of templates (one a line) | one template with '{}'."""
    if value is None or value in ("kinetics", "none"):
        return value
    p = Path(value).expanduser()
    if p.is_file():
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return lines
    if "{}" in value:
        return [value]
    raise VtkError(f"--templates {value}: give kinetics, none, a file of templates or a "
                   "template with '{}'")


def render_table(result: dict, console=None) -> None:
    """One row per benchmark and direction: R@1/5/10 (classification: top-1, top-5, AVG) in
    percent, median and mean rank, and the counts."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:  # piped or logged: do not squeeze to 80 columns
        console.width = max(console.width, 100)
    table = Table(title="zero-shot evaluation (%; ranks 1-based)", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column("benchmark", no_wrap=True)
    table.add_column("", no_wrap=True)
    # AVG ((top-1 + top-5) / 2, ViCLIP's classification figure) is not a recall: own column
    for col in ("@1", "@5", "@10", "AVG", "MdR", "MnR", "videos", "texts", "missing"):
        table.add_column(col, justify="right", no_wrap=True)

    def pct(x):
        return f"{100 * x:.1f}"

    for name, b in result["benchmarks"].items():
        m = b["metrics"]
        counts = [str(b["num_videos"]), str(b["num_texts"]), str(b.get("missing", 0))]
        if b["task"] == "classification":
            table.add_row(name, "top-k", pct(m["top1"]), pct(m["top5"]), "", pct(m["avg"]), "",
                          "", *counts)
            continue
        first = True
        for d, label in (("t2v", "T2V"), ("v2t", "V2T"), ("dsl_t2v", "T2V dsl"),
                         ("dsl_v2t", "V2T dsl")):
            if f"{d}_r1" not in m:
                continue
            table.add_row(name if first else "", label, pct(m[f"{d}_r1"]), pct(m[f"{d}_r5"]),
                          pct(m[f"{d}_r10"]), "", f"{m[f'{d}_mdr']:g}", f"{m[f'{d}_mnr']:.1f}",
                          *(counts if first else ["", "", ""]))
            first = False
    console.print(table)
    from vtk.eval.protocol import summary

    cards = {summary(b["protocol"]) for b in result["benchmarks"].values() if b.get("protocol")}
    for line in sorted(cards):
        console.print(f"protocol: {line}", highlight=False)


@click.command("eval")
@click.argument("run", metavar="RUN")
@click.option("--bench", "benches", multiple=True,
              help="synth (all eight synthetic analogs), synth-NAME, or NAME=PATH[,VIDEOS] for a "
                   "local copy of k400 k600 k700 msrvtt lsmdc didemo msvd anet, or a benchmark shard "
                   "set built by vtk shard (a folder or URL, e.g. s3://bucket/bench/k400). "
                   "Repeatable. Default: synth for a run trained on the synthetic world; a run "
                   "trained on real video names its benchmarks.")
@click.option("--protocol", default=default("protocol"), show_default=True,
              type=click.Choice(list(PROTOCOLS)),
              help="plain: raw similarities, no weight interpolation, every caption, centre "
                   "crop; internvid: InternVid's zero-shot settings (DSL reported, WiSE-FT 0.5, "
                   "one caption per MSR-VTT video, their text clean-up, whole frame). The options "
                   "below change single settings.")
@click.option("--dsl/--no-dsl", default=None,
              help="Score dual-softmax rescored retrieval (dsl_*) beside the raw figures.")
@click.option("--wise-ft", type=click.FloatRange(0, 1), default=None, metavar="ALPHA",
              help="Evaluate (1 - ALPHA) * init + ALPHA * trained weights (WiSE-FT; 1: the "
                   "trained model).")
@click.option("--init", default=None,
              help="The weights --wise-ft interpolates with: a CLIP folder or viclip:PATH "
                   "(default: the run's --init).")
@click.option("--templates", default=None,
              help="Class prompts: kinetics (ViCLIP's 16, the default), none, a file (one per "
                   "line) or one template with '{}'.")
@click.option("--template-average", type=click.Choice(["similarity", "embedding"]),
              default=None,
              help="Average per-template similarities (ViCLIP, the default) or template "
                   "embeddings (CLIP).")
@click.option("--crop", type=click.Choice(["center", "full"]), default=None,
              help="center: short side to the input size, centre square; full: the whole "
                   "frame resized to the square (InternVid).")
@click.option("--captions", "caption_queries", type=click.Choice(["all", "one"]), default=None,
              help="Retrieval queries: every caption of a video, or its first only.")
@click.option("--clean", type=click.Choice(["none", "internvid"]), default=None,
              help="Text clean-up before tokenising (internvid: lower case, punctuation "
                   "dropped).")
@click.option("--save-sims", type=click.Path(file_okay=False),
              help="Write NAME.npy (texts x videos) and NAME.json (ground truth) per benchmark.")
@click.option("--batch-size", default=default("batch_size"), show_default=True,
              type=click.IntRange(min=1),
              help="Clips per embedding batch.")
@click.option("--backend", default=default("backend"), show_default=True,
              help="Decoder: auto, dali, torchcodec, pyav, decord.")
@click.option("--device", default=default("device"), show_default=True, type=DEVICE,
              help="auto, cpu, cuda, cuda:1 ...")
@click.option("--workers", default=default("workers"), show_default=True,
              type=click.IntRange(min=0),
              help="Loader workers (and shard-building workers on first use).")
@click.option("--cache", type=click.Path(file_okay=False),
              help="Benchmark shard cache (default $VTK_CACHE or ~/.cache/vtk).")
def command(run, benches, protocol, dsl, wise_ft, init, templates, template_average, crop,
            caption_queries, clean, save_sims, batch_size, backend, device, workers, cache):
    """Zero-shot classification and retrieval of the run in RUN; writes RUN/eval.json. RUN may
    be viclip:PATH, a released ViCLIP checkpoint (.pth): it is converted into the vtk run
    NAME-vtk beside it (once), which then holds eval.json.

    \b
    Examples:
      vtk eval runs/fine --bench synth --dsl
      vtk eval runs/fine --bench k400=~/data/kinetics400 --bench msrvtt=~/data/msrvtt
      vtk eval runs/fine --bench s3://bucket/bench/synth-k400
      vtk eval viclip:ViClip-InternVid-10M-FLT.pth --protocol internvid --wise-ft 1 \\
          --bench msrvtt=~/data/msrvtt/MSRVTT_JSFUSION_test.csv
    """
    from rich.console import Console

    from vtk.eval.benchmarks import default_benches, parse_bench
    from vtk.eval.evaluate import evaluate
    from vtk.model.released import is_released

    console = Console(stderr=True)
    if not is_released(run) and not Path(run).is_dir():
        raise VtkError(f"{run}: run folder not found")
    if not benches and not is_released(run):  # a converted checkpoint: evaluate says it
        benches = tuple(default_benches(Path(run)))
    one = None
    if caption_queries is not None:
        one = [s.name.removeprefix("synth-") for s in parse_bench(benches)] \
            if caption_queries == "one" else []
    result = evaluate(run, benches or None, protocol=protocol, dsl=dsl, wise_ft=wise_ft, init=init,
                      templates=parse_templates(templates), template_average=template_average,
                      crop=crop, one_caption=one, clean=clean, save_sims=save_sims,
                      batch_size=batch_size, backend=backend, device=device, workers=workers,
                      cache=cache, log=lambda line: console.print(f"[dim]{line}[/]"))
    render_table(result)
    folder = next(iter(result["benchmarks"].values()))["checkpoint"]["path"]
    click.echo(f"wrote {Path(folder).parent / 'eval.json'}")
    if save_sims:
        click.echo(f"similarities: {save_sims}")
