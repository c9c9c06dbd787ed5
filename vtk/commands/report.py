"""`vtk report DIR...`: the ablation tables (and plots) from finished runs."""

from __future__ import annotations

import click

from vtk.errors import VtkError


@click.command("report")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]),
              default="table", show_default=True)
@click.option("--v2t", is_flag=True, help="Video-to-text R@1 instead of text-to-video.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also draw the results to this PNG.")
@click.option("--html", "html_dir", type=click.Path(file_okay=False),
              help="Also write the tables and the plot as a page: HTML_DIR/index.html.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Write the markdown/csv/json output to this file instead of stdout.")
@click.option("--protocol", "protocols", multiple=True,
              help="The numbers of this evaluation protocol (plain, internvid, or a label vtk "
                   "eval printed), a table per protocol: give two to see them side by side. "
                   "Default: each benchmark's latest evaluation.")
def command(dirs, fmt, v2t, plot_path, html_dir, out_path, protocols):
    """Tables of the caption and masking ablations found under DIRS (vtk ablate's runs;
    plain train + eval runs are reported as the ablation "runs", one arm per folder).

    \b
    Example:
      vtk report runs/ --format markdown --plot runs/ablations.png
      vtk report runs/ --html runs/report     # open runs/report/index.html
      vtk report runs/ --protocol plain --protocol internvid
    """
    from vtk import report

    arms = report.collect(dirs, list(protocols) or None)
    if not arms:
        which = f" evaluated with --protocol {' or '.join(protocols)}" if protocols else ""
        raise VtkError(f"{', '.join(dirs)}: no finished runs{which} (a folder with eval.json "
                       f"and summary.json or ablation.json)")
    if fmt == "table":
        report.render_table(arms, v2t=v2t)  # warnings included
    else:
        for line in report.warnings(arms):
            click.secho(f"warning: {line}", fg="yellow", err=True)
        text = report.render_text(arms, fmt, v2t=v2t)
        if out_path:
            with open(out_path, "w") as f:
                f.write(text + "\n")
        else:
            click.echo(text)
    if plot_path:
        click.echo(f"plot: {report.plot(arms, plot_path, v2t=v2t)}")
    if html_dir:
        click.echo(f"page: {report.render_html(arms, html_dir, v2t=v2t)}")
