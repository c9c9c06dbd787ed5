"""`vtk inspect DIR`: the dataset card, a validation of every tar, a preview of samples."""

from __future__ import annotations

import contextlib

import click

from vtk.errors import VtkError
from vtk.shards.reader import MAX_SAMPLE_BYTES


def _folder_or_url(ctx, param, value):
    """A local folder must exist (click's check); a URL is checked when it is read."""
    from vtk import storage

    if not storage.store(value).local:
        return value.rstrip("/")
    return click.Path(exists=True, file_okay=False).convert(value, param, ctx)


@click.command("inspect")
@click.argument("folder", callback=_folder_or_url)
@click.option("--samples", "-n", type=int, default=3, show_default=True,
              help="How many samples to preview.")
@click.option("--no-decode", is_flag=True, help="Skip decoding the videos (faster).")
@click.option("--json", "as_json", is_flag=True, help="Print the card and report as JSON.")
@click.option("--max-sample-bytes", type=click.IntRange(min=1), default=MAX_SAMPLE_BYTES,
              show_default=True,
              help="A sample whose members together declare more bytes is reported and not read.")
def command(folder, samples, no_decode, as_json, max_sample_bytes):
    """Print a shard set's card, validate every tar and preview a few samples.

    \b
    Every sample must have mp4, txt and json, as plain files under safe relative names (no
    absolute path, '..', NUL, link or device) and within --max-sample-bytes (judged on the tar
    headers, before reading); the json must be an object with its required fields; the mp4
    must decode to the frame count and size its json states; each .idx must match its tar.
    Exits non-zero when anything is wrong.

    \b
    FOLDER may be a URL (s3://bucket/prefix, any fsspec URL; AWS_* variables for S3).

    \b
    Examples:  vtk inspect shards/synth
               vtk inspect s3://bucket/shards/synth
    """
    from vtk.shards.integrity import card_name, read_card
    from vtk.shards.validate import check_card, check_shard
    from vtk.shards.writer import shard_tars

    card = read_card(folder)
    name = card_name(card, folder)
    tars = shard_tars(folder, name)
    reports = []
    with _bar(len(tars), card.get("num_samples")) as (pbar, task):
        for tar in tars:
            left = max(0, samples - sum(len(r.previews) for r in reports))
            reports.append(check_shard(tar, decode=not no_decode, preview=left,
                                       max_bytes=max_sample_bytes))
            pbar.update(task, completed=len(reports),
                        clips=sum(r.num_samples for r in reports))
    problems = check_card(folder, card, reports) + [p for r in reports for p in r.problems]
    layers = caption_layers(folder, tars)
    if as_json:
        import json

        click.echo(json.dumps({"card": card, "shards": [
            {"file": r.file, "num_samples": r.num_samples, "problems": r.problems,
             "caption_errors": r.caption_errors} for r in reports],
            "caption_layers": layers, "problems": problems}, indent=2, ensure_ascii=False))
    else:
        _show(folder, card, reports, problems, layers)
    if problems:
        raise VtkError(f"{folder}: {len(problems)} problem(s), first: {problems[0]}")


@contextlib.contextmanager
def _bar(shards: int, clips):
    """Progress over the shards on stderr: a bar on a terminal, a plain line every
    VTK_PROGRESS_EVERY seconds in a log (checking thousands of clips takes a while)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from vtk.progress import bar

    of = f" of {clips}" if isinstance(clips, int) else ""
    with bar(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TextColumn("shards,"),
             TextColumn("{task.fields[clips]}" + of + " clips"), TimeRemainingColumn(),
             line="checking: {clips}" + of + " clips | shards", stderr=True) as pbar:
        yield pbar, pbar.add_task("inspect", total=shards, clips=0)


def caption_layers(folder, tars) -> list[dict]:
    """The caption layers of the set (vtk caption): models, prompt hashes and counts, as read
    from their sidecars now, and the shards that have none."""
    from vtk.captions.layer import list_layers, read_card, summarize

    out = []
    for name in list_layers(folder):
        counts = summarize(folder, name, tars)
        out.append({"name": name, **counts,
                    "settings": read_card(folder, name).get("captions")})
    return out


def _show(folder, card, reports, problems, layers=()) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    head = Table(title=f"shard set {escape(folder)}", show_header=False)
    head.add_row("samples", f"{card.get('num_samples')} in {card.get('num_shards')} shards "
                 f"({card.get('num_bytes', 0) / 1e6:.1f} MB)")
    head.add_row("built by", escape(str(card.get("command"))))
    head.add_row("created", str(card.get("created")))
    clips = card.get("clips", {})
    # sets built before the card had short_side: size None was 224 for files, native for synth
    side = (clips.get("short_side") or clips.get("size")
            or "default (224 for files, native for synth)")
    head.add_row("clips", f"{clips.get('mode')} at {clips.get('fps')} fps, short side "
                 f"{side}, codec {card.get('codec')}")
    caps = card.get("captions", {})
    head.add_row("captions", escape(", ".join(f"{k}={v}" for k, v in caps.items() if v)))
    fails = card.get("failures", {})
    head.add_row("failures", f"{fails.get('total', 0)} " + escape(str(fails.get("by_reason") or "")))
    failed: dict[str, int] = {}
    for r in reports:
        for scale, n in r.caption_errors.items():
            failed[scale] = failed.get(scale, 0) + n
    if failed:  # clips kept with their other captions (a video captioner failed on them)
        head.add_row("caption failures", escape(", ".join(f"{k}: {n} clips"
                                                          for k, n in failed.items())))
    for layer in layers:
        missing = (f", {layer['shards_without_sidecar']} shards without a sidecar"
                   if layer["shards_without_sidecar"] else "")
        head.add_row(f"caption layer {escape(layer['name'])}", escape(
            f"{', '.join(layer['models']) or '?'}; prompt {', '.join(layer['prompt_sha']) or '-'}"
            f"; {layer['captioned']['text']} of {layer['samples']} clips captioned, "
            f"{layer['failures']} failed{missing}"))
    if card.get("benchmark"):
        b = card["benchmark"]
        head.add_row("benchmark", f"{b.get('name')} ({b.get('task')})")
    versions = card.get("versions", {})
    head.add_row("versions", escape(", ".join(f"{k} {v}" for k, v in versions.items())))
    console.print(head)

    shards = Table(title="shards")
    for col in ("file", "samples", "status"):
        shards.add_column(col)
    for r in reports:
        shards.add_row(r.file, str(r.num_samples),
                       "[green]ok[/]" if not r.problems else f"[red]{len(r.problems)} problems[/]")
    console.print(shards)

    preview = Table(title="samples")
    preview.add_column("key", no_wrap=True)
    for col in ("time (s)", "frames", "size"):
        preview.add_column(col, no_wrap=True)
    preview.add_column("txt", overflow="fold")
    for r in reports:
        for p in r.previews:
            j = p["json"]
            preview.add_row(p["key"], f"{j.get('start')}-{j.get('end')}", str(j.get("num_frames")),
                            f"{j.get('width')}x{j.get('height')}", escape(p["txt"][:120]))
    console.print(preview)
    for p in problems[:20]:
        console.print(f"[red]problem[/] {escape(p)}", highlight=False)
    if len(problems) > 20:
        console.print(f"... and {len(problems) - 20} more")
    if not problems:
        console.print(f"[green]valid:[/] {sum(r.num_samples for r in reports)} samples decode "
                      f"and carry every field")
