"""`vtk view DIR`: a shard set's clips and captions in the browser, or as static files."""

from __future__ import annotations

import errno

import click

from vtk.errors import VtkError


@click.command("view")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--port", type=int, default=8000, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but a loopback address serves the set to the "
                   "network.")
@click.option("--static", "static_out", type=click.Path(file_okay=False),
              help="Write the page as static files to this folder instead of serving it.")
@click.option("--limit", type=int, default=200, show_default=True,
              help="With --static: how many rows (the first in shard order; a tar that "
                   "cannot be read is one error row).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar with --static.")
def command(folder, port, host, static_out, limit, quiet):
    """Browse a shard set: clips that play on hover, their captions and per-frame timeline,
    label, scores and source; filters, sorting, the dataset card and the failed inputs.

    \b
    Served by Python's own http.server; mp4s are read straight from the tars by their .idx
    offsets, so a set of any size opens at once.

    \b
    Examples:
      vtk view shards/synth                 then open http://127.0.0.1:8000/
      vtk view shards/synth --static site --limit 100
    """
    from vtk.shards.integrity import refuse_unfinished
    from vtk.view.index import ShardSetView

    refuse_unfinished(folder)
    view = ShardSetView(folder)
    if not view.shards:
        raise VtkError(f"{folder}: no .tar shards; build some with: vtk shard SOURCE --out "
                       f"{folder}")
    if static_out:
        return _static(view, static_out, limit, quiet)
    _serve(view, folder, host, port)


def _static(view, out, limit, quiet) -> None:
    from rich.progress import track

    from vtk.view.export import export_static

    def bar(rows, total):
        return track(rows, total=total, description="posters", disable=quiet, transient=True)

    done = export_static(view, out, limit, progress=bar)
    click.echo(f"wrote {done['clips']} clips ({done['rows']} rows of {done['of']}) to {out}: "
               f"open {out}/index.html")


def _serve(view, folder, host, port) -> None:
    import sys

    from vtk.view.server import ViewServer

    try:
        server = ViewServer(view, host, port, log=lambda line: print(line, file=sys.stderr))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise VtkError(f"port {port} on {host} is in use: pass another --port (0 picks a "
                           f"free one)") from None
        raise VtkError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    if server.allowed_hosts is None:
        click.secho(f"warning: {host} is not a loopback address: anyone who can reach this "
                    f"machine can read {folder}", fg="yellow", err=True)
    click.echo(f"vtk view: {view.total()} rows in {len(view.shards)} shards of {folder} at "
               f"{server.url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
