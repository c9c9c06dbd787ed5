"""`vtk filter DIR --out DIR2`: a new shard set of the clips the rules keep."""

from __future__ import annotations

import click


def render_drops(index: dict, console=None) -> None:
    """The table of what was dropped, per reason, with one example each."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from vtk.curate.filter import drop_table

    console = console or Console()
    cur = index["curation"]
    counts = cur["counts"]
    table = Table(title=f"kept {counts['kept']} of {counts['input']} clips "
                        f"(rules: {', '.join(cur['rules']) or 'none'})",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("dropped by")
    table.add_column("clips", justify="right")
    table.add_column("example")
    for why, n, example in drop_table(index):
        table.add_row(why, str(n), example)
    console.print(table)


@click.command("filter")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder of the new shard set.")
@click.option("--min", "min_", multiple=True, metavar="NAME=X",
              help="Keep clips whose score NAME is >= X (e.g. clip-text=0.25). Repeatable.")
@click.option("--max", "max_", multiple=True, metavar="NAME=X",
              help="Keep clips whose score NAME is <= X. Repeatable.")
@click.option("--top", multiple=True, metavar="NAME=F",
              help="Keep the share F of the clips (those left by the other rules) with the "
                   "highest NAME: floor(F * n + 0.5) clips.")
@click.option("--dedup", metavar="frames|embed:T",
              help="Drop near-duplicates: frames (perceptual hashes of sampled frames) or "
                   "embed:T (clip embedding cosine >= T; T depends on the scoring model: "
                   "0.999 for a tiny vtk run, docs/curation.md); the largest copy is kept.")
@click.option("--rules", "rule_string", metavar="RULES",
              help="The rules as one string instead, e.g. 'top:clip-text=0.3, dedup:frames'.")
@click.option("--samples-per-shard", type=click.IntRange(min=1),
              help="Samples per new shard (default: the parent's).")
@click.option("--device", default="cpu", show_default=True,
              help="Device of the embedding search (cuda: fp16 matmuls).")
@click.option("--quiet", "-q", is_flag=True, help="No table.")
def command(folder, out, min_, max_, top, dedup, rule_string, samples_per_shard, device, quiet):
    """Filter the scored shard set in FOLDER (vtk score first) into a new shard set in OUT:
    clips copied unchanged, provenance in OUT/index.json ("curation": parent, rules, counts
    kept and dropped per reason, examples).

    \b
    Rules apply in this order: unscored, --min/--max, --dedup, --top.
    Examples:
      vtk filter shards/train --out shards/top30 --top clip-text=0.3
      vtk filter shards/train --out shards/dedup --dedup frames
      vtk filter shards/train --out shards/clean --min motion=0.02 --dedup embed:0.999
    """
    from vtk.curate.filter import filter_set
    from vtk.curate.rules import build_rules, parse_rules
    from vtk.errors import VtkError

    if rule_string and (min_ or max_ or top or dedup):
        raise VtkError("--rules replaces --min/--max/--top/--dedup: give one or the other")
    rules = parse_rules(rule_string) if rule_string else build_rules(min_, max_, top, dedup)
    index = filter_set(folder, out, rules, samples_per_shard=samples_per_shard, device=device,
                       progress=not quiet)
    if not quiet:
        render_drops(index)
    c = index["curation"]["counts"]
    click.echo(f"kept {c['kept']} of {c['input']} clips in {index['num_shards']} shards: {out}")
