"""`vtk verify DIR|URL`: re-read and re-hash every shard against index.json."""

from __future__ import annotations

import click

from vtk.commands.inspect import _folder_or_url
from vtk.errors import VtkError


@click.command("verify")
@click.argument("folder", callback=_folder_or_url)
@click.option("--workers", type=click.IntRange(min=1),
              help="Shards read and hashed at once (default: the cores, at most 8).")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
def command(folder, workers, quiet):
    """Prove a shard set is the one that was built: every tar re-read and its sha256
    compared with index.json's; missing, extra, cut short or altered shards and sidecars
    that belong to no shard (or to another build of one) are reported. Exits non-zero on any.

    \b
    FOLDER may be a URL (s3://bucket/prefix, any fsspec URL).

    \b
    Examples:  vtk verify shards/train
               vtk verify s3://bucket/shards/train --workers 16
    """
    from rich.console import Console
    from rich.markup import escape

    from vtk.shards.integrity import verify_set

    report = verify_set(folder, workers=workers, progress=not quiet)
    console = Console(soft_wrap=True)  # one problem a line, whole: a log greps it
    for p in report.problems[:50]:
        console.print(f"[red]problem[/] {escape(p)}", highlight=False)
    if len(report.problems) > 50:
        console.print(f"... and {len(report.problems) - 50} more")
    line = (f"{report.shards} shards, {report.samples} samples, {report.bytes / 1e6:.1f} MB "
            f"re-hashed; {report.sidecars} sidecars checked; set sha256 "
            f"{report.set_sha256 or 'not recorded'}")
    if report.problems:
        console.print(escape(line), highlight=False)
        raise VtkError(f"{folder}: {len(report.problems)} problem(s), first: "
                       f"{report.problems[0]}")
    console.print(f"[green]verified:[/] {escape(line)}", highlight=False)
