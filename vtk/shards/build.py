"""The shard pipeline: sources -> clips -> captions -> encoded samples -> ShardWriter.

``N`` worker processes each take one source at a time and do everything costly for it
(decode, scene detection, captioning, encoding); the parent only writes, in input order, so
the shard set is the same whatever ``--workers`` is. At most ``2 x N`` sources are in flight,
which bounds memory however long the input list is.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from vtk.clips import ClipConfig, ClipStats, InputError, clips_from_item, encode_mp4
from vtk.errors import VtkError
from vtk.shards.schema import make_sample
from vtk.sources.fetch import FetchConfig, FetchError, local_copy
from vtk.types import Clip, SourceItem
from vtk.workers import exit_with_parent

CAPTION_BATCH = 8  # clips captioned together: amortises model calls, bounds held frames


@dataclass
class SourceResult:
    """Everything one source produced, sent from a worker to the writer."""

    source_id: str
    input: str
    samples: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # {kind, reason, key?}
    frames_decoded: int = 0
    cuts: int = 0  # scene cuts detected (mode scenes)
    seconds: float = 0.0  # worker time spent on the source
    caption_hits: int = 0  # clips whose captions came from the caption cache
    caption_misses: int = 0  # clips looked up in the cache and captioned afresh
    captioners: dict = field(default_factory=dict)  # video captioner -> counts (tally_captions)
    download: dict | None = None  # how a source at a URL was fetched (vtk.sources.fetch)
    segment: dict | None = None  # a part of a file: its report (vtk.clips.segments)


def tally_captions(counts: dict, captioned: dict | None) -> None:
    """Add one clip's video-captioner figures (its ``caption_info`` and ``caption_errors``)
    to ``counts``: {model: {clips, failures, truncated, prompt_tokens, output_tokens,
    generate_s}}. From the results themselves, so a Ray actor's work counts like a worker's."""
    models = (captioned or {}).get("caption_models") or {}
    for role, info in ((captioned or {}).get("caption_info") or {}).items():
        c = counts.setdefault(info.get("model") or models.get(role, role), _zero())
        c["clips"] += 1
        c["truncated"] += bool(info.get("truncated"))
        for k in ("prompt_tokens", "output_tokens", "generate_s"):
            c[k] += info.get(k) or 0
    for role in (captioned or {}).get("caption_errors") or {}:
        counts.setdefault(models.get(role, role), _zero())["failures"] += 1


def _zero() -> dict:
    return {"clips": 0, "failures": 0, "truncated": 0, "prompt_tokens": 0, "output_tokens": 0,
            "generate_s": 0.0}


def merge_tallies(into: dict, other: dict) -> None:
    for model, c in other.items():
        mine = into.setdefault(model, _zero())
        for k, v in c.items():
            mine[k] = mine.get(k, 0) + v


def captioner_figures(counts: dict) -> dict:
    """The run summary's throughput per video captioner: tokens per clip, output tokens and
    clips per second of the captioner's own generate time (summed over workers or actors)."""
    out = {}
    for model, c in counts.items():
        n, s = c["clips"], c["generate_s"]
        out[model] = {**c, "generate_s": round(s, 3),
                      "prompt_tokens_per_clip": round(c["prompt_tokens"] / n, 1) if n else None,
                      "output_tokens_per_clip": round(c["output_tokens"] / n, 1) if n else None,
                      "output_tokens_per_s": round(c["output_tokens"] / s, 2) if s else None,
                      "clips_per_s": round(n / s, 3) if s else None}
    return out


@dataclass
class Totals:
    sources: int = 0
    skipped_sources: int = 0
    clips: int = 0
    failed_sources: int = 0
    frames_decoded: int = 0
    cuts: int = 0
    caption_hits: int = 0
    caption_misses: int = 0
    captioners: dict = field(default_factory=dict)
    downloads: int = 0  # sources fetched from URLs (or tried)
    downloads_failed: int = 0
    download_bytes: int = 0
    download_s: float = 0.0

    def add(self, result: SourceResult) -> None:
        """Count one processed source (both engines count the same way)."""
        self.sources += 1
        self.clips += len(result.samples)
        self.frames_decoded += result.frames_decoded
        self.cuts += result.cuts
        self.caption_hits += result.caption_hits
        self.caption_misses += result.caption_misses
        merge_tallies(self.captioners, result.captioners)
        self.failed_sources += bool(result.failures and not result.samples)
        if result.download is not None:
            self.downloads += 1
            self.downloads_failed += result.download["status"] != "ok"
            self.download_bytes += result.download["bytes"]
            self.download_s += result.download["seconds"]

    def merge(self, other: dict) -> None:
        """Add another engine part's totals (``dataclasses.asdict`` of a Totals), but its
        skipped sources (the driver counts those)."""
        for k, v in other.items():
            if k == "captioners":
                merge_tallies(self.captioners, v)
            elif k != "skipped_sources":
                setattr(self, k, getattr(self, k) + v)


# --- in the worker ---------------------------------------------------------------------------

_STATE: dict = {}


def init_worker(cfg: ClipConfig, codec: str, caption_spec, parent: int | None = None,
                captioning=None, fetch: FetchConfig | None = None) -> None:
    """Per-process set-up: captioning models load once per worker, not per source.
    ``parent``: the PID of the process that started the pool; the worker ends with it.
    ``captioning``: an object with ``run(clips)`` that captions elsewhere (the Ray engine's
    captioner actors) instead of models loaded here. ``fetch``: how sources at URLs are
    downloaded (``vtk.sources.fetch``)."""
    if parent is not None:  # first: a parent killed while we start must not leave us behind
        exit_with_parent(parent)
    import cv2

    cv2.setNumThreads(1)  # one core per worker: OpenCV's own pool would only contend
    _STATE.update(cfg=cfg, codec=codec, spec=caption_spec, captioning=captioning, cache=None,
                  fetch=fetch)
    if captioning is None and caption_spec is not None and caption_spec.active:
        from vtk.captions import Captioning

        captioning = Captioning(caption_spec)
        if captioning.cache is not None:
            captioning.cache = _STATE["cache"] = _CountingCache(captioning.cache)
        _STATE["captioning"] = captioning


class _CountingCache:
    """A caption cache that counts its look-ups: a hit is a clip not captioned again, a miss
    one sent to the captioners."""

    def __init__(self, cache):
        self.cache, self.hits, self.misses = cache, 0, 0

    def get(self, *key):
        found = self.cache.get(*key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def __getattr__(self, name):
        return getattr(self.cache, name)


def process_source(item: SourceItem, segment=None) -> SourceResult:
    """Clips, captions and encodes one source (a source at a URL fetched first, to a local
    copy); never raises for a bad input. ``segment``: only that part of a local file
    (``vtk.clips.segments``; the parent reconciles the parts)."""
    t0 = time.perf_counter()
    result = SourceResult(item.id, item.meta.get("input") or item.describe())
    error = item.meta.get("error")
    if error:
        result.failures.append(dict(error))
        return result
    try:
        with local_copy(item, _STATE.get("fetch")) as (local, result.download):
            _clip_source(local, result, segment)
    except FetchError as e:
        result.download = e.record
        result.failures = [{"kind": e.kind, "reason": e.reason}]
    result.seconds = time.perf_counter() - t0
    return result


def _clip_source(item: SourceItem, result: SourceResult, segment=None) -> None:
    stats = ClipStats()
    cache = _STATE["cache"]
    hits0, misses0 = (cache.hits, cache.misses) if cache is not None else (0, 0)
    batch: list[Clip] = []
    try:
        for clip in clips_from_item(item, _STATE["cfg"], stats, segment):
            batch.append(clip)
            if len(batch) >= (CAPTION_BATCH if _STATE["captioning"] else 1):
                _finish(batch, result)
                batch = []
        _finish(batch, result)
    except InputError as e:
        if e.clips:  # broke part-way: the complete clips before the fault stand
            _finish(batch, result)
            # Keyed by the first clip lost, so the failure stands beside the source's written
            # clips, and clears if a --retry-failed run writes that clip after all.
            result.failures.append({"kind": e.kind, "reason": e.reason,
                                    "key": f"{item.id}_{e.clips:06d}"})
        else:
            result.samples = []
            result.failures = [{"kind": e.kind, "reason": e.reason}]
    except VtkError:
        raise  # a setting is wrong (say, a caption model that is not there): stop the run
    except Exception as e:  # a bug or an FFmpeg surprise must not stop the other sources
        result.samples = []
        result.failures = [{"kind": "error", "reason": f"{type(e).__name__}: {e}"}]
    result.frames_decoded, result.cuts = stats.frames_decoded, stats.cuts
    result.segment = stats.extra.get("segment")
    if cache is not None:
        result.caption_hits = cache.hits - hits0
        result.caption_misses = cache.misses - misses0


def _finish(batch: list[Clip], result: SourceResult) -> None:
    if not batch:
        return
    spec, codec = _STATE["spec"], _STATE["codec"]
    captioned = _STATE["captioning"].run(batch) if _STATE["captioning"] else [None] * len(batch)
    mode = spec.mode if spec is not None else "none"
    for clip, cap in zip(batch, captioned):
        if cap and cap.get("error"):
            result.failures.append({"kind": "caption-error", "reason": str(cap["error"]),
                                    "key": clip.key})
            continue
        tally_captions(result.captioners, cap)  # a clip a video captioner failed on is kept
        mp4 = encode_mp4(clip.frames, clip.fps, codec, gop=_STATE["cfg"].gop)
        result.samples.append(make_sample(clip, mp4, codec, cap, mode))


# --- in the parent ---------------------------------------------------------------------------


def run_sources(items: Iterable[SourceItem], writer, cfg: ClipConfig, codec: str,
                caption_spec, workers: int = 1,
                on_result: Callable[[SourceResult, Totals], None] | None = None,
                fetch: FetchConfig | None = None) -> Totals:
    """Feed every item not yet completed in ``writer`` through the workers, writing results
    in input order. ``on_result`` is called after each source (progress display)."""
    totals = Totals()

    def todo() -> Iterator[SourceItem]:
        for item in items:
            if writer.is_done(item.id):
                totals.skipped_sources += 1
                continue
            yield item

    for result in _ordered_map(todo(), cfg, codec, caption_spec, workers, fetch):
        write_result(writer, result)
        totals.add(result)
        if on_result:
            on_result(result, totals)
    return totals


def write_result(writer, result: SourceResult) -> None:
    """One source's samples and failures into ``writer``, then the source marked done (after
    its last sample: the resume rule of ``ShardWriter``)."""
    for sample in result.samples:
        writer.add(sample)
    for f in result.failures:
        writer.fail(result.source_id, result.input, f["kind"], f["reason"], f.get("key"))
    if result.download is not None:
        writer.downloaded(result.source_id, result.download)
    writer.source_done(result.source_id)


def _ordered_map(items: Iterator[SourceItem], cfg, codec, caption_spec, workers: int,
                 fetch: FetchConfig | None = None) -> Iterator[SourceResult]:
    if workers <= 1:  # in-process: no start-up cost, same code path
        init_worker(cfg, codec, caption_spec, fetch=fetch)
        for item in items:
            yield process_source(item)
        return
    pool = _Pool(workers, (cfg, codec, caption_spec), fetch)
    try:
        inflight: deque = deque()  # (item, part or None, future), a file's parts in a row
        for item in items:
            for part in file_parts(item, cfg, workers) or [None]:
                inflight.append((item, part, pool.submit(item, part)))
            while len(inflight) >= 2 * workers:
                yield _next_result(pool, inflight, cfg)
        while inflight:
            yield _next_result(pool, inflight, cfg)
    finally:
        pool.shutdown()


def file_parts(item: SourceItem, cfg: ClipConfig, workers: int) -> list | None:
    """The parts one long local file is cut into scenes in (``vtk.clips.segments.plan``), one
    per worker; None for every other source."""
    from vtk.clips import effective_mode
    from vtk.clips.segments import plan
    from vtk.sources.fetch import is_remote

    if (workers < 2 or item.frames is not None or item.meta.get("error") or not item.path
            or is_remote(item.path) or effective_mode(item, cfg) != "scenes"
            or not os.path.isfile(item.path)):
        return None
    try:
        return plan(item.path, workers, overlap=cfg.min_scene_len + 1)
    except InputError:  # the pass over the whole file reports what is wrong with it
        return None


def _next_result(pool, inflight: deque, cfg: ClipConfig) -> SourceResult:
    """The oldest source's result; a file cut in parts is reconciled into one (or, where the
    parts do not agree with one pass, cut again in one pass)."""
    item, part, _ = inflight[0]
    if part is None:
        return pool.result(inflight)
    segs = [seg for _, seg, _ in list(inflight)[:part.parts]]
    merged = merge_parts(item, segs, [pool.result(inflight) for _ in segs], cfg)
    if merged is not None:
        return merged
    inflight.appendleft((item, None, pool.submit(item, None)))
    return pool.result(inflight)


def merge_parts(item: SourceItem, segs: list, parts: list[SourceResult],
                cfg: ClipConfig) -> SourceResult | None:
    """One file's result from its parts' (``vtk.clips.segments``): the cuts replayed over
    every frame's score, each part's clips kept where its cuts are those, renumbered in order.
    None when a part failed or cut elsewhere than the single pass (then cut it in one)."""
    from vtk.clips.segments import agrees, global_scores, replay_cuts

    if any(p.segment is None or any(f["kind"] != "caption-error" for f in p.failures)
           for p in parts):
        return None
    reports = [p.segment for p in parts]
    scores = global_scores(segs, reports)
    if scores is None:
        return None
    cuts = replay_cuts(scores, cfg.threshold, cfg.min_scene_len, reports[0]["fps"])
    if not all(agrees(seg, rep, cuts) for seg, rep in zip(segs, reports)):
        return None
    merged = SourceResult(item.id, parts[0].input, frames_decoded=segs[0].frames, cuts=len(cuts),
                          seconds=sum(p.seconds for p in parts))
    for p in parts:
        renamed = {}
        for sample in p.samples:
            key = f"{item.id}_{len(merged.samples):06d}"
            renamed[sample["__key__"]] = key
            sample["__key__"] = key
            sample["json"]["clip"] = len(merged.samples)
            merged.samples.append(sample)
        merged.failures += [{**f, "key": renamed.get(f.get("key"), f.get("key"))}
                            for f in p.failures]
        merged.caption_hits += p.caption_hits
        merged.caption_misses += p.caption_misses
        merge_tallies(merged.captioners, p.captioners)
    return merged



class _Pool:
    """Worker processes that survive a worker's death.

    A source that kills its worker (an FFmpeg crash, the OOM killer) breaks the whole
    executor, and every source in flight with it. The pool is then rebuilt and the oldest
    source retried alone: if it breaks the pool again it is the culprit and is recorded as
    failed; the others are resubmitted. (multiprocessing.Pool would wait forever instead.)
    """

    def __init__(self, workers: int, initargs: tuple, fetch: FetchConfig | None = None):
        self.workers, self.initargs, self.fetch = workers, initargs, fetch
        self.executor = self._start()

    def _start(self):
        # spawn, not fork: workers may load torch models, which do not survive a fork
        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                   initializer=init_worker,
                                   initargs=(*self.initargs, os.getpid(), None, self.fetch))

    def submit(self, item: SourceItem, part=None) -> Future:
        try:
            return self.executor.submit(process_source, item, part)
        except BrokenProcessPool as e:  # broken before we saw it: fail like its futures do
            future: Future = Future()
            future.set_exception(e)
            return future

    def result(self, inflight: deque) -> SourceResult:
        """The result of the oldest source (or part of a file) in flight, popped from
        ``inflight`` ((item, part, future) entries)."""
        item, part, future = inflight.popleft()
        try:
            return future.result()
        except BrokenProcessPool:
            pass
        self._restart()
        try:
            result = self.submit(item, part).result()  # alone in a fresh pool
        except BrokenProcessPool:
            self._restart()
            result = SourceResult(item.id, item.meta.get("input") or item.describe(),
                                  failures=[{"kind": "crash",
                                             "reason": "the worker process died on this input"}])
        for k, (other, other_part, _) in enumerate(inflight):  # lost with the old pool
            inflight[k] = (other, other_part, self.submit(other, other_part))
        return result

    def _restart(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = self._start()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
