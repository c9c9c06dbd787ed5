"""`vtk shard`: videos, manifests or the synthetic world to WebDataset shards with captions."""

from __future__ import annotations

import os

import click

from vtk.clips import MAX_CLIP_FRAMES, MAX_FPS, MODES
from vtk.clips.encode import CODECS
from vtk.commands.options import DEVICE, defaults_of, vlm_options
from vtk.progress import ShardProgress
from vtk.shards.config import ShardConfig
from vtk.shards.engines import ENGINES
from vtk.types import SHARD_CAPTION_MODES

default = defaults_of(ShardConfig)  # the one source of vtk shard's defaults


@click.command("shard")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for the shard set.")
@click.option("--name", default=default("name"), show_default=True, help="Shard file prefix.")
@click.option("--captions", type=click.Choice(SHARD_CAPTION_MODES),
              default=default("captions"), show_default=True, help="Which captions to build.")
@click.option("--coarse-model", default=None,
              help="Captioner for the middle frame: shapes | tagger | hf:ID "
                   "(default: shapes for synth:, tagger otherwise).")
@click.option("--fine-model", default=None,
              help="Per-frame captioner (same choices), or a video captioner vlm:ID that "
                   "captions the clip as a video (docs/captions.md).")
@click.option("--summarizer", default=default("summarizer"), show_default=True,
              help="Merges frame captions: rules | hf:ID.")
@click.option("--fine-fps", type=float, default=None,
              help="Frames per second the fine captioner sees (default: vtk.captions' own).")
@click.option("--caption-device", default=default("caption_device"), show_default=True,
              type=DEVICE,
              help="Device for caption models: auto | cpu | cuda | cuda:N.")
@click.option("--caption-cache", type=click.Path(file_okay=False), default=None,
              help="Folder of the caption cache (SQLite, keyed by clip pixels and caption "
                   "settings); share one across shard sets (default: OUT/.caption-cache).")
@click.option("--no-caption-cache", is_flag=True,
              help="No caption cache: a re-run or --resume captions every clip again.")
@click.option("--vlm-model", default=None, metavar="vlm:ID",
              help="A video captioner for a caption scale of its own, captions.vlm (vtk train "
                   "--captions vlm), beside --captions.")
@vlm_options
@click.option("--clips", "clip_mode", type=click.Choice(MODES), default=default("clip_mode"),
              show_default=True,
              help="scenes: PySceneDetect cuts; fixed: --clip-len windows; whole: one clip per "
                   "source; auto: whole for synth:, scenes for videos. Manifest start/end win.")
@click.option("--min-clip", type=click.FloatRange(min=0), default=default("min_clip"),
              show_default=True,
              help="Drop scenes shorter than this (s).")
@click.option("--max-clip", type=click.FloatRange(min=0, min_open=True),
              default=default("max_clip"),
              show_default=True, help="Split scenes longer than this (s); at least 2 x "
                                      "--min-clip.")
@click.option("--clip-len", type=click.FloatRange(min=0, min_open=True),
              default=default("clip_len"),
              show_default=True, help="Window length for --clips fixed (s).")
@click.option("--size", type=int, default=None,
              help="Short side of the clips in px (default: 224; synth: its own size).")
@click.option("--fps", type=click.FloatRange(min=0, max=MAX_FPS, min_open=True),
              default=default("fps"),
              show_default=True,
              help=f"Clip frame rate. Above a source's own rate its frames repeat; a clip "
                   f"(--max-clip, or --clip-len for fixed, x --fps) holds at most "
                   f"{MAX_CLIP_FRAMES} frames, which bounds memory.")
@click.option("--codec", type=click.Choice(list(CODECS)), default=default("codec"),
              show_default=True,
              help="vp9 for DALI's CPU decoder; h264 for NVDEC and everything else.")
@click.option("--gop", type=click.IntRange(min=1), default=default("gop"), show_default=True,
              help="Clip frames between keyframes at most (default: the encoder's own, 250 "
                   "for x264). A sparse frame draw decodes from the keyframe before each frame it "
                   "wants, so short GOPs make long clips faster to sample (docs/loader.md).")
@click.option("--samples-per-shard", type=click.IntRange(min=1),
              default=default("samples_per_shard"), show_default=True)
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: number of CPUs, at most 8); with --engine ray, "
                   "the CPUs of the cluster vtk starts when there is none to join.")
@click.option("--engine", type=click.Choice(list(ENGINES)), default=default("engine"),
              show_default=True,
              help="local: a process pool on this machine; ray: tasks on a Ray cluster write "
                   "whole shards (the ray extra; docs/scale-out.md).")
@click.option("--ray-address", default=None, metavar="auto|HOST:PORT",
              help="With --engine ray: the cluster to join (auto: the one this machine "
                   "belongs to; default: RAY_ADDRESS, else a new local one of --workers CPUs).")
@click.option("--captioners", type=click.IntRange(min=0), default=None,
              help="With --engine ray: captioner actors, each loading the models once "
                   "(default: one per GPU share; 0, and the default without GPUs: the shard "
                   "tasks caption themselves).")
@click.option("--captioner-gpus", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --engine ray: GPUs per captioner actor; 0.25 puts four small models "
                   "on one GPU.")
@click.option("--video-root", type=click.Path(file_okay=False), default=None,
              help="Where manifest URLs and YouTube IDs are found as <id>.<ext> (without it, "
                   "s3://, gs:// and http(s):// videos are fetched by the workers).")
@click.option("--download-timeout", type=click.FloatRange(min=0, min_open=True),
              default=default("download_timeout"), show_default=True,
              help="Sources at URLs: seconds a download may wait for its next bytes before "
                   "the attempt fails (3 attempts, then a recorded failure).")
@click.option("--download-concurrency", type=click.IntRange(min=1),
              default=default("download_concurrency"),
              help="Sources at URLs: downloads at a time on one machine (default: one per "
                   "worker).")
@click.option("--resume", is_flag=True,
              help="Continue a killed or extended run: inputs already done (written or "
                   "recorded as failed) are skipped; none is written twice.")
@click.option("--retry-failed", is_flag=True,
              help="With --resume: try the inputs that failed before again.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def command(sources, out, name, captions, coarse_model, fine_model, summarizer, fine_fps,
            caption_device, caption_cache, no_caption_cache, vlm_model, vlm_fps, vlm_window,
            vlm_mode, vlm_max_tokens, vlm_prompt, vlm_batch, clip_mode, min_clip, max_clip,
            clip_len, size, fps, codec, gop, samples_per_shard, workers, engine, ray_address,
            captioners, captioner_gpus, video_root, download_timeout, download_concurrency,
            resume, retry_failed, quiet):
    """Cut videos into clips, caption them and write WebDataset shards.

    \b
    SOURCES: synth:<preset>[?n=..&seed=..&size=..], video folders, manifests
    (.csv .tsv .jsonl .parquet) or video files, local or at URLs (s3://bucket/raw/).

    \b
    Examples:
      vtk shard synth:train?n=2000 --out shards/synth --captions both
      vtk shard videos/ --out shards/mine --clips scenes --size 224 --workers 4
      vtk shard internvid.csv --video-root videos/ --out shards/iv --resume
      vtk shard internvid.csv --out s3://bucket/iv --engine ray --ray-address auto
      vtk shard s3://bucket/raw/ --out s3://bucket/shards --engine ray
    """
    from vtk.shards.build_set import build_shard_set
    from vtk.sources import count_sources

    ctx = click.get_current_context()
    options = {k: v for k, v in ctx.params.items() if k not in ("sources", "out", "quiet")}
    if not quiet:
        from vtk.captions.captioning import offline_default_note

        note = offline_default_note(sources, captions, coarse_model, fine_model)
        if note:
            click.echo(note, err=True)
    with ShardProgress(quiet, count_sources(sources), engine) as progress:
        build_shard_set(sources, out, **options,
                        on_result=progress.update,
                        on_close=lambda index, run, failures, items: _report(
                            index, run, failures, items, out, quiet))


def _report(index, run, failures, items, out, quiet) -> None:
    if not quiet:
        _summary(index, run, out, failures)
    if items.duplicates:  # a warning, so even --quiet prints it
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(
            f"[yellow]warning:[/] {items.duplicates} duplicate input(s) skipped (same file, or "
            f"same video and start/end, as an earlier one; first: "
            f"{escape(items.duplicate_example or '')})", highlight=False)


def captioner_line(c: dict) -> str:
    """One line of a video captioner's figures (``vtk.shards.build.captioner_figures``)."""
    rate = (f", {c['output_tokens_per_s']:.1f} output tokens/s, {c['clips_per_s']:.2f} clips/s"
            if c.get("clips_per_s") else "")
    return (f"{c['clips']} clips, {c['failures']} failed, {c['truncated']} truncated; "
            f"{c['prompt_tokens_per_clip'] or 0:.0f} prompt + {c['output_tokens_per_clip'] or 0:.0f}"
            f" output tokens a clip{rate}")


def _summary(index: dict, run: dict, out: str, failures: list[dict]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title=f"shard set {escape(out)}", show_header=False)
    table.add_row("samples (set)", str(index["num_samples"]))
    table.add_row("shards", str(index["num_shards"]))
    table.add_row("size", f"{index['num_bytes'] / 1e6:.1f} MB")
    table.add_row("this run", f"{run['sources']} sources -> {run['clips']} clips in "
                  f"{run['wall_s']:.1f} s ({run['clips_per_s'] or 0:.1f} clips/s)")
    if run["skipped_sources"]:
        table.add_row("resumed", f"{run['skipped_sources']} completed sources skipped")
    if run.get("caption_cache"):
        c = run["caption_cache"]
        table.add_row("caption cache", f"{c['hits']} hits, {c['captioned']} clips captioned")
    for model, c in (run.get("captioners") or {}).items():
        table.add_row(escape(model), captioner_line(c))
    fails = index["failures"]
    table.add_row("failures", str(fails["total"]) + (
        " (" + ", ".join(f"{k}: {v}" for k, v in fails["by_reason"].items()) + ")"
        if fails["total"] else ""))
    console.print(table)
    for failure in failures[:10]:
        console.print(f"  [red]failed[/] {escape(failure['input'])}: "
                      f"{escape(failure['reason'])}", highlight=False)
    if len(failures) > 10:
        console.print(f"  ... and {len(failures) - 10} more in {os.path.join(out, 'stats')}")
