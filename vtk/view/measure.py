"""The open-time figures of docs/view.md: fabricated shard sets of N clips, timed.

    python -m vtk.view.measure 100 100000 [--json OUT.json]

Each set is one real sample (``synth:train?n=1&size=32``, captions both) repeated under new keys
by ShardWriter, with a ``scores.umt`` to sort by: real tars, ``.idx``, stats and index.json, only
the mp4 bytes are shared. Timed on a fresh ShardSetView each: opening; the first and the last
page of 24 rows (unfiltered: only the shards they cover are read); a word filter on a cold view
(it reads every json member once into the facets); the same filter again and a sort by score
(from the facets). The page cache is warm (the set was just written).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tarfile
import tempfile
import time

from vtk.shards.writer import ShardWriter
from vtk.view.index import ShardSetView


def base_sample(tmp: str) -> tuple[bytes, dict]:
    from vtk.cli import cli

    out = os.path.join(tmp, "one")
    cli.main(["shard", "synth:train?n=1&size=32", "--out", out, "--captions", "both",
              "--workers", "1", "--quiet"], standalone_mode=False)
    with tarfile.open(os.path.join(out, "shard-000000.tar")) as tar:
        key = tar.getnames()[0].split(".")[0]
        return (tar.extractfile(f"{key}.mp4").read(),
                json.loads(tar.extractfile(f"{key}.json").read()))


def fabricate(out: str, n: int, mp4: bytes, info: dict, per_shard: int = 1000) -> None:
    writer = ShardWriter(out, samples_per_shard=per_shard)
    for i in range(n):
        sid = f"fab-{i:07d}"
        meta = {**info, "source": f"synth:{sid}", "source_id": sid,
                "scores": {"umt": (i * 7919 % 1000) / 1000}}
        writer.add({"__key__": f"{sid}_000000", "mp4": mp4, "txt": "", "json": meta})
        writer.source_done(sid)
    writer.close()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, repeat: int = 1) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1000


def measure(folder: str, n: int) -> dict:
    open_ms = timed(lambda: ShardSetView(folder), repeat=5)
    view = ShardSetView(folder)
    first_ms = timed(lambda: view.query(limit=24))
    last_ms = timed(lambda: view.query(offset=n - 24, limit=24))
    view = ShardSetView(folder)
    before = rss_mb()
    word = "red"
    filter_cold_ms = timed(lambda: view.query(q=word, limit=24))
    grown = rss_mb() - before
    filter_warm_ms = timed(lambda: view.query(q=word, limit=24))
    sort_ms = timed(lambda: view.query(sort="umt", limit=24))
    return {"clips": n, "shards": len(view.shards), "open_ms": round(open_ms, 2),
            "first_page_ms": round(first_ms, 1), "last_page_ms": round(last_ms, 1),
            "filter_cold_ms": round(filter_cold_ms), "filter_warm_ms": round(filter_warm_ms),
            "sort_warm_ms": round(sort_ms), "facets_rss_mb": round(grown, 1),
            "matches": view.query(q=word)["total"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sizes", type=int, nargs="+")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vtk-view-measure-") as tmp:
        mp4, info = base_sample(tmp)
        for n in args.sizes:
            folder = os.path.join(tmp, f"set-{n}")
            t = time.perf_counter()
            fabricate(folder, n, mp4, info)
            built = time.perf_counter() - t
            rows.append({**measure(folder, n), "build_s": round(built, 1),
                         "load_before": round(os.getloadavg()[0], 1)})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python -m vtk.view.measure " + " ".join(map(str, args.sizes)),
                       "cpus": os.cpu_count(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
