"""`vtk bench resume`: seconds to the first batch after resuming at 10%, 50% and 90% of an epoch.

One pass over the shard set records the loader's position (``state_dict()``) after every
batch. Then, for each point, a fresh loader is started twice and timed from its creation to
its first batch:

- ``state``: ``load_state_dict`` at that position (how ``vtk train --resume`` resumes now:
  earlier shards are not opened, earlier clips of the current group not read);
- ``replay``: the pass replayed from its start up to that batch, as vtk did before loader
  state existed (and as an ``{"epoch", "offset"}`` checkpoint of an older vtk still does).

The two are measured side by side in one run, on the same machine state; their ratio is the
figure, not the seconds.
"""

from __future__ import annotations

import json
import time

import click

POINTS = (0.1, 0.5, 0.9)


def first_batch_s(make, state=None, replay: int = 0) -> float:
    loader = make()
    t0 = time.perf_counter()
    if state is not None:
        loader.load_state_dict(state)
    it = iter(loader)
    for _ in range(replay):
        next(it)
    next(it)
    seconds = time.perf_counter() - t0
    del it, loader
    return seconds


def run_bench(shards, backend: str = "pyav", frames: int = 8, size: int = 64,
              batch_size: int = 16, workers: int = 0, points=POINTS) -> dict:
    from vtk.data.loader import build_loader

    def make():
        return build_loader(shards, backend=backend, frames=frames, size=size, train=True,
                            batch_size=batch_size, workers=workers, seed=0)

    loader = make()
    states, t0 = [], time.perf_counter()
    for _ in loader:
        states.append(loader.state_dict())
    epoch_s = time.perf_counter() - t0
    rows = []
    for p in points:
        k = max(1, min(len(states) - 1, round(p * len(states))))  # batches handed out
        new = first_batch_s(make, state=states[k - 1])
        old = first_batch_s(make, replay=k)
        rows.append({"point": p, "batches_before": k, "state_s": round(new, 3),
                     "replay_s": round(old, 3), "speedup": round(old / new, 2)})
    flat = rows[-1]["state_s"] / rows[0]["state_s"]
    return {"shards": str(shards), "backend": backend, "frames": frames, "size": size,
            "batch_size": batch_size, "workers": workers, "batches_per_epoch": len(states),
            "epoch_s": round(epoch_s, 2), "points": rows,
            "state_90_over_10": round(flat, 2)}


@click.command("resume")
@click.argument("shards")
@click.option("--backend", default="pyav", show_default=True)
@click.option("--frames", default=8, show_default=True, type=click.IntRange(1, 64))
@click.option("--size", default=64, show_default=True, type=click.IntRange(16, 1024))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="write results here")
def command(shards, backend, frames, size, batch_size, workers, json_out):
    """Seconds to the first batch after a resume at 10%, 50% and 90% of an epoch: from the
    loader's state (now) beside replaying the epoch to that point (before).

    \b
    Example:  vtk bench resume shards/train --json bench-resume.json
    """
    from rich.console import Console
    from rich.table import Table

    res = run_bench(shards, backend, frames, size, batch_size, workers)
    table = Table(title=f"resume: first batch after load ({res['batches_per_epoch']} batches "
                        f"an epoch, {res['epoch_s']} s)")
    for col in ("point", "batches before", "state (s)", "replay (s)", "replay / state"):
        table.add_column(col, justify="right")
    for r in res["points"]:
        table.add_row(f"{r['point']:.0%}", str(r["batches_before"]), f"{r['state_s']:.3f}",
                      f"{r['replay_s']:.3f}", f"{r['speedup']:.1f}x")
    Console().print(table)
    Console().print(f"state: 90% / 10% = {res['state_90_over_10']:.2f} (goal: 1.5 or less)")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(res, f, indent=2)
