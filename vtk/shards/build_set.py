"""Build a shard set: sources -> clips -> captions -> WebDataset shards + index.json (the card).

The one library entry point behind `vtk shard`, `vtk demo` and `vtk bench shard`; the click
command only parses options, draws the progress bar and prints the summary.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import time
from collections.abc import Callable

from vtk.errors import VtkError

CACHE_DIR = ".caption-cache"  # in OUT, hidden: loaders glob *.tar and never look inside


def build_shard_set(sources, out, *, command: str | None = None,
                    on_result: Callable | None = None, on_close: Callable | None = None,
                    **options) -> dict:
    """Write the shard set of ``sources`` to ``out`` and return its index (index.json).

    ``options``: `vtk shard`'s options, the fields of ``vtk.shards.config.ShardConfig`` (same
    names, their defaults there). ``command``: the card's "command" field (None: the ``vtk
    shard`` command line of these sources and options, ``shard_command``). ``on_result(result,
    totals)``: called per source (a progress bar). ``on_close(index, run, failures, items)``:
    called once the index is written, before an empty set raises. ``engine``: "local" (a
    process pool of ``workers``) or "ray" (``vtk.shards.engines.ray_engine``: ``ray_address``,
    ``captioners``, ``captioner_gpus``). ``vlm_*``: the video captioner's settings
    (``vtk.captions.vlm``), used where a ``vlm:`` model fills the fine caption or, as
    ``vlm_model``, the scale ``vlm``; ``vlm_prompt`` is a file."""
    from vtk.shards.config import ShardConfig

    o = ShardConfig.from_options(options)
    sources = list(sources)
    from vtk.clips import ClipConfig
    from vtk.shards.engines import make_engine
    from vtk.shards.writer import ShardWriter
    from vtk.sources import benchmark_card, open_sources
    from vtk.sources.fetch import FetchConfig
    from vtk.types import SOURCE_ID_SCHEME

    if o.size is not None and o.size < 16:
        raise VtkError(f"--size {o.size}: need at least 16 px")
    try:
        cfg = ClipConfig(mode=o.clip_mode, size=o.size, fps=o.fps, min_clip=o.min_clip,
                         max_clip=o.max_clip, clip_len=o.clip_len, gop=o.gop)
    except ValueError as e:  # ClipConfig names its fields: name the options instead
        raise VtkError(re.sub(r"\b(fps|min_clip|max_clip|clip_len|gop)\b",
                              lambda m: "--" + m.group(1).replace("_", "-"), str(e))) from None
    workers = o.workers or min(os.cpu_count() or 1, 8)
    if o.caption_cache and o.no_caption_cache:
        raise VtkError("--caption-cache and --no-caption-cache exclude each other")
    cache_dir = None if o.no_caption_cache else os.path.abspath(
        o.caption_cache or default_caption_cache(out))
    spec = caption_spec(o.captions, o.coarse_model, o.fine_model, o.summarizer, o.fine_fps,
                        o.caption_device, cache_dir, vlm_model=o.vlm_model,
                        vlm=vlm_settings(**dataclasses.asdict(o)))
    if o.retry_failed and not o.resume:
        raise VtkError("--retry-failed goes with --resume")
    check_models(spec)  # a hub id that cannot load: seconds, not minutes of retries
    items = open_sources(sources, video_root=o.video_root)  # checks every SOURCE first
    fetch = FetchConfig(timeout=o.download_timeout, concurrency=o.download_concurrency)
    runner = make_engine(o.engine, ray_address=o.ray_address, captioners=o.captioners,
                         captioner_gpus=o.captioner_gpus)
    run_sources = runner.run  # the local pool or a Ray cluster: one protocol (engines/)
    caps = _spec_dict(spec, o.captions)
    # where the cache lives does not change a sample, so a resume need not repeat it (kept as
    # null rather than dropped: sets built before the cache was wired resume as they are)
    settings = {"clips": dataclasses.asdict(cfg), "codec": o.codec,
                "captions": {**caps, "cache_dir": None} if "cache_dir" in caps else caps,
                "source_ids": SOURCE_ID_SCHEME}
    from vtk import storage

    fresh = storage.store(out).local and not os.path.exists(out)  # made by this run
    writer = ShardWriter(out, name=o.name, samples_per_shard=o.samples_per_shard,
                         resume=o.resume, settings=settings, retry_failed=o.retry_failed)
    started = time.perf_counter()
    try:
        totals = run_sources(items, writer, cfg, o.codec, spec, workers=workers,
                             on_result=on_result, fetch=fetch)
    except BaseException:  # nothing half-done is published; the lock goes at once
        writer.abort()
        remove_if_untouched(out, fresh)
        raise
    wall = time.perf_counter() - started
    run = {"sources": totals.sources, "skipped_sources": totals.skipped_sources,
           "clips": totals.clips, "failed_sources": totals.failed_sources,
           "frames_decoded": totals.frames_decoded, "wall_s": round(wall, 3),
           "clips_per_s": round(totals.clips / wall, 3) if wall else None,
           "workers": workers, "duplicate_inputs": items.duplicates}
    if totals.downloads:  # sources read from URLs by the workers
        run["downloads"] = {"sources": totals.downloads, "failed": totals.downloads_failed,
                            "bytes": totals.download_bytes,
                            "seconds": round(totals.download_s, 3)}
    if spec is not None and spec.cache_dir:
        run["caption_cache"] = {"dir": spec.cache_dir, "hits": totals.caption_hits,
                                "captioned": totals.caption_misses}
    if totals.captioners:
        from vtk.shards.build import captioner_figures

        run["captioners"] = captioner_figures(totals.captioners)
    card = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else shard_command(sources, out, options),
        "sources": list(sources),
        "clips": {**dataclasses.asdict(cfg), "short_side": card_short_side(cfg, sources)},
        "codec": o.codec,
        "samples_per_shard": o.samples_per_shard,
        "captions": card_captions(caps, sources),
        "versions": versions(),
        "engine": runner.describe(),  # local workers, or the Ray cluster's size
        "last_run": run,
    }
    bench = benchmark_card(sources)
    if bench:
        card["benchmark"] = bench
    index = writer.close(card)
    if on_close is not None:
        on_close(index, run, writer.failures(), items)
    if index["num_samples"] == 0:
        raise VtkError(f"nothing written to {out}: all {totals.sources} inputs failed "
                       f"(reasons in {os.path.join(out, 'stats')})")
    return index




def check_models(spec) -> None:
    """Every ``hf:``/``vlm:`` model of the caption spec can load now (``vtk.captions.hf.
    check_hub``): checked before the output folder is made."""
    if spec is None:
        return
    names = [getattr(spec, k, None) for k in ("coarse_model", "fine_model", "summarizer",
                                               "vlm_model")]
    hub = [n for n in names if isinstance(n, str) and n.startswith(("hf:", "vlm:"))]
    if hub:
        from vtk.captions.hf import check_hub

        for name in hub:
            check_hub(name)


def remove_if_untouched(out, fresh: bool) -> None:
    """A build that made ``out`` and failed before writing a shard or recording a source
    leaves nothing behind (its lock, an empty stats/, the caption cache it opened)."""
    import shutil

    if not fresh or not os.path.isdir(out):
        return
    stats = os.path.join(out, "stats")
    worked = any(n.endswith(".tar") for n in os.listdir(out)) or (
        os.path.isdir(stats) and any(os.scandir(stats)))
    if not worked:
        shutil.rmtree(out, ignore_errors=True)


def default_caption_cache(out) -> str:
    """OUT/.caption-cache; for a URL (the cache is SQLite, local only) the shared local cache
    ``$VTK_CACHE/caption-cache`` (default ``~/.cache/vtk``): its keys are clip pixels and
    caption settings, so sets may share it."""
    from vtk import storage

    if storage.store(out).local:
        return os.path.join(out, CACHE_DIR)
    root = os.environ.get("VTK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vtk")
    return os.path.join(os.path.expanduser(root), "caption-cache")


FLAGS = {"clip_mode": "--clips"}  # a ShardConfig field whose vtk shard option is named otherwise


def shard_command(sources, out, options: dict) -> str:
    """The card's "command": the ``vtk shard`` command line that builds this set, whether it
    was run from a shell or through ``build_shard_set`` (``options``: the ShardConfig fields
    given; those at their default are left out)."""
    import shlex

    from vtk.shards.config import ShardConfig

    defaults = ShardConfig()
    parts = ["vtk", "shard", *map(str, sources), "--out", str(out)]
    for name, value in options.items():
        if value == getattr(defaults, name) or value in (None, False):
            continue
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


def caption_spec(mode, coarse_model, fine_model, summarizer, fine_fps, device,
                 cache_dir=None, vlm_model=None, vlm=None):
    """The CaptionSpec for the workers, or None for ``--captions none`` without a
    ``vlm_model``. Models left unset are chosen per clip by vtk.captions: ``shapes`` for
    synth: clips, ``tagger`` otherwise. ``cache_dir``: the caption cache's folder (None: no
    cache). ``vlm``: the video captioner's ``VLMSettings`` (kept only where one is used)."""
    if mode == "none" and vlm_model is None:
        return None
    from vtk.captions import CaptionSpec  # lazy: torch-free start-up for --captions none
    from vtk.captions.base import is_video_model

    given = {"coarse_model": coarse_model, "fine_model": fine_model, "fine_fps": fine_fps,
             "vlm_model": vlm_model}
    if vlm_model is not None or is_video_model(fine_model) or is_video_model(coarse_model):
        given["vlm"] = vlm
    return CaptionSpec(mode=mode, summarizer=summarizer, device=device, cache_dir=cache_dir,
                       **{k: v for k, v in given.items() if v is not None})


def vlm_settings(vlm_fps, vlm_window, vlm_mode, vlm_max_tokens, vlm_prompt, vlm_batch, **_):
    """``VLMSettings`` from the ``--vlm-*`` options (a command's parsed options, or a
    ShardConfig's fields: other keys are ignored); ``vlm_prompt`` is a file, read now."""
    from vtk.captions.vlm import VLMSettings, read_prompt

    return VLMSettings(fps=vlm_fps, window=vlm_window, mode=vlm_mode, max_tokens=vlm_max_tokens,
                       prompt=read_prompt(vlm_prompt), batch=vlm_batch)


def _by_kind(sources, for_files, for_synth):
    """What applies to these sources: video files and synth: specs get different defaults."""
    kinds = {s.startswith("synth:") for s in sources}
    if kinds == {True}:
        return for_synth
    if kinds == {False}:
        return for_files
    return f"{for_files} (files), {for_synth} (synth)"


def card_short_side(cfg, sources) -> int | str:
    """The short side the clips really have (``size`` None means a default, not native)."""
    from vtk.clips import DEFAULT_SIZE

    return cfg.size if cfg.size else _by_kind(sources, DEFAULT_SIZE, "native")


def card_captions(caps: dict, sources) -> dict:
    """The caption settings with the models actually used where the default was taken."""
    out = dict(caps)
    for key, scale in (("coarse_model", "coarse"), ("fine_model", "fine")):
        if key in out and out[key] is None and out.get("mode") in (scale, "both"):
            out[key] = _by_kind(sources, "tagger", "shapes")
    return out


def _spec_dict(spec, mode: str) -> dict:
    if spec is None:
        return {"mode": mode}
    if dataclasses.is_dataclass(spec):
        out = dataclasses.asdict(spec)
        # unset video-captioner fields are left out: sets built before they existed resume
        for key in ("vlm_model", "vlm"):
            if out.get(key) is None:
                out.pop(key, None)
        return out
    return {"mode": mode, **{k: v for k, v in vars(spec).items() if not k.startswith("_")}}


def versions() -> dict:
    """Versions of what shapes the bytes of a shard set."""
    from vtk.environment import versions as of

    return of("av", "scenedetect", "cv2", "numpy")
