"""`vtk bench decode DIR`: how fast each backend's full loader runs next to its raw decode rate.

For each backend, on the same shard set, with the same number of worker processes:
- loader: ``build_loader(train=True)`` end to end (tar reading, ViCLIP frame sampling,
  decode, RandomResizedCrop + flip, normalisation, batching, hand-over from the workers);
- ceiling: the same frames of the same clips decoded with no transforms and no batching.
``ratio`` = loader clips/s / ceiling clips/s; the target is 0.9 or more. CPU ms per clip counts
the main process and its workers (user + system); the load average (1, 5, 15 min) before and
after each row is recorded beside it; on a shared machine the CPU figures are the
steadier comparison, so the ceiling's is reported too. ``cache`` times the frame-cache loader
(built before the clock starts; it has no decode ceiling). ``dali`` runs in DALI's own threads
(``--workers`` does not apply); its ceiling is the same DALI pipeline without the crops.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time

import click
import torch


def cpu_seconds() -> float:
    """User + system CPU of this process, its reaped children and its live children (the
    loader's persistent workers, read from /proc). A child reaped between two readings moves
    from the live sum to the reaped one, so differences stay right."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live_children_cpu()


def live_children_cpu() -> float:
    """CPU seconds (user + system) of this process's running children; 0 without /proc."""
    me, total = os.getpid(), 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == me:  # fields after "(comm)": state, ppid, ..., utime (12), stime (13)
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class RawDecode(torch.utils.data.IterableDataset):
    """Decode only: this slot's samples at the loader's frame indices, nothing kept; yields
    how many clips it decoded, once per ``batch_size`` clips (as the loader hands over one
    batch, not one clip, per message: the ceiling carries no per-clip IPC the loader lacks)."""

    def __init__(self, shards, backend, frames, batch_size=32, seed=0):
        self.shards, self.backend, self.frames, self.seed = shards, backend, frames, seed
        self.batch_size = batch_size

    def __iter__(self):
        import webdataset as wds

        from vtk.data import split
        from vtk.data.decoders import get_decoder
        from vtk.data.samples import sample_rng
        from vtk.data.sampling import train_indices

        part, parts = split.partition(0, 1, *split.worker())
        mine, by_sample = split.assign(list(self.shards), part, parts)
        samples = wds.tarfile_to_samples(handler=wds.warn_and_continue)(wds.SimpleShardList(mine))
        if by_sample:
            samples = split.every_nth(samples, part, parts)
        dec = get_decoder(self.backend)
        done = 0
        for s in samples:
            if "mp4" not in s:
                continue
            rng = sample_rng(self.seed, 0, s["__key__"])
            try:
                dec.decode(s["mp4"], lambda n, r=rng: train_indices(n, self.frames, r))
            except Exception:  # the loader skips these too
                continue
            done += 1
            if done == self.batch_size:
                yield done
                done = 0
        if done:
            yield done


def timed(make_iter, count) -> dict:
    """Run one full pass; wall seconds, CPU seconds and clips."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    clips = sum(count(x) for x in make_iter())
    return {"seconds": time.perf_counter() - t0, "cpu": cpu_seconds() - c0, "clips": clips}


def bench_backend(shards, backend, frames, size, workers, batch_size, passes, cache_dir,
                  uint8=False) -> dict:
    """Loader and ceiling passes interleaved (L C L C ...), so load from other processes hits
    both alike, after one untimed warm-up pass of each; clips/s is the best pass of each (as
    timeit takes the best), CPU the mean."""
    from vtk.data.loader import build_loader

    load_before = [round(x, 2) for x in os.getloadavg()]
    kw = dict(frames=frames, size=size, train=True, batch_size=batch_size, workers=workers,
              uint8=uint8)
    if backend == "cache":
        loader = build_loader(shards, cache=cache_dir, **kw)  # builds the cache, untimed
    else:
        loader = build_loader(shards, backend=backend, **kw)
    ceiling = None
    if backend == "dali":
        from vtk.data.dali import DaliLoader

        raw = DaliLoader(loader.paths, loader.spec, batch_size, 0, 1, loader.gpu, raw=True)
        ceiling = (lambda: raw, lambda b: len(b["key"]))
    elif backend != "cache":
        # persistent workers, as the loader's: neither pays a fork per pass
        raw = torch.utils.data.DataLoader(
            RawDecode(loader.dataset.shards, backend, frames, batch_size),
            batch_size=None, num_workers=workers, persistent_workers=workers > 0)
        ceiling = (lambda: raw, lambda n: n)
    # one untimed pass each first: worker start-up and the first touch of the batch slots are
    # start-up costs, not throughput
    timed(lambda: loader, lambda b: len(b["key"]))
    if ceiling:
        timed(*ceiling)
    runs, ceil = [], []
    for _ in range(passes):
        runs.append(timed(lambda: loader, lambda b: len(b["key"])))
        if ceiling:
            ceil.append(timed(*ceiling))
    row = summarise(runs, frames)
    row.update(backend=backend, workers=workers, ceiling_clips_per_s=None, ratio=None,
               ceiling_cpu_ms_per_clip=None, size=size, frames=frames,
               video="float32" if backend == "dali" or not uint8 else "uint8",
               load_before=load_before, load_after=[round(x, 2) for x in os.getloadavg()])
    if ceiling:
        c = summarise(ceil, frames)
        row.update(ceiling_clips_per_s=c["clips_per_s"],
                   ratio=round(row["clips_per_s"] / c["clips_per_s"], 3),
                   ceiling_cpu_ms_per_clip=c["cpu_ms_per_clip"])
    return row


def summarise(runs, frames) -> dict:
    best = max(r["clips"] / r["seconds"] for r in runs)
    clips = sum(r["clips"] for r in runs)
    cpu = sum(r["cpu"] for r in runs)
    return {"clips": clips, "clips_per_s": round(best, 2), "frames_per_s": round(best * frames, 1),
            "cpu_ms_per_clip": round(1000 * cpu / max(clips, 1), 2)}


@click.command("decode")
@click.argument("shards", type=click.Path(exists=True))
@click.option("--backends", default=None,
              help="Comma list of pyav, decord, torchcodec, dali, cache (default: every installed "
                   "CPU decoder, then cache).")
@click.option("--workers", type=int, default=2, show_default=True, help="Loader worker processes.")
@click.option("--frames", type=int, default=8, show_default=True, help="Frames per clip.")
@click.option("--size", type=int, default=224, show_default=True, help="Output side (px).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--min-clips", type=int, default=200, show_default=True,
              help="Repeat passes over the shard set until at least this many clips are timed "
                   "(3 passes at least).")
@click.option("--uint8", is_flag=True,
              help="Time loaders that hand over uint8 clips (the consumer normalises, on its GPU: "
                   "what `vtk train` does on CUDA) instead of normalised float32.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the rows as a JSON list.")
def command(shards, backends, workers, frames, size, batch_size, min_clips, uint8, json_out):
    """Loader throughput per decode backend next to its raw decode ceiling.

    \b
    Example:
      vtk bench decode shards/synth --backends pyav,decord,torchcodec --workers 2 --json dec.json
    """
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from vtk.data.decoders import available_decoders
    from vtk.data.shardset import resolve_shards
    from vtk.errors import VtkError

    paths = resolve_shards(shards)
    names = backends.split(",") if backends else available_decoders() + ["cache"]
    card = os.path.join(shards, "index.json") if os.path.isdir(shards) else None
    total = json.load(open(card)).get("num_samples") if card and os.path.exists(card) else None
    passes = max(3, math.ceil(min_clips / total)) if total else 3
    console = Console(stderr=True)
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in names:
            with console.status(f"timing {name} ..."):
                try:
                    rows.append(bench_backend(paths, name.strip(), frames, size, workers,
                                              batch_size, passes, cache_dir, uint8))
                except VtkError as e:  # not installed here: say so and go on
                    console.print(f"[yellow]skipped {name}:[/] {e}")
    table = Table(title=f"decode: {shards}  ({frames} frames, {size} px, "
                        f"{'uint8' if uint8 else 'float32'}, {workers} workers, "
                        f"{os.cpu_count()} CPUs)")
    for col in ("backend", "clips/s", "frames/s", "CPU ms/clip", "ceiling clips/s", "ratio",
                "ceiling CPU ms/clip"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in rows:
        table.add_row(r["backend"], f"{r['clips_per_s']:.1f}", f"{r['frames_per_s']:.0f}",
                      f"{r['cpu_ms_per_clip']:.1f}",
                      "-" if r["ceiling_clips_per_s"] is None else f"{r['ceiling_clips_per_s']:.1f}",
                      "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
                      "-" if r["ceiling_cpu_ms_per_clip"] is None
                      else f"{r['ceiling_cpu_ms_per_clip']:.1f}")
    Console().print(table)
    if json_out:
        keys = ("backend", "clips_per_s", "frames_per_s", "cpu_ms_per_clip",
                "ceiling_clips_per_s", "ratio", "workers", "ceiling_cpu_ms_per_clip", "video",
                "size", "frames", "clips", "load_before", "load_after")
        with open(json_out, "w") as f:
            json.dump([{k: r[k] for k in keys} for r in rows], f, indent=2)
