"""The fine captions of Big Buck Bunny's scenes beside what the flow measured (issue 15 item 4).

    vtk shard bbb.mp4 --out /tmp/bbbshards --captions fine --size 224 --workers 1
    vtk score /tmp/bbbshards --scores motion          # vtk.curate's motion score (optional)
    python docs/results/bbb_motion.py /tmp/bbbshards --json docs/results/bbb-motion.json

For every clip: its scene (start-end s), the fine caption written by ``vtk shard`` (tagger tags
+ the rules summariser's motion words), and, recomputed from the shard's mp4 on the same frames
the fine captioner saw, the camera's median pan / tilt / zoom rates, the moving share and the
mean flow magnitude (``vtk.captions.motion``: frame widths per second), plus ``vtk score``'s
``motion`` column when the sidecar is there. Prints a markdown table of ten scenes spread over
the film.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np


def clips(folder: Path):
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as tf:
            sample: dict = {}
            for m in tf:
                key, _, ext = m.name.partition(".")
                if sample and sample["key"] != key:
                    yield sample
                    sample = {}
                sample["key"] = key
                sample[ext] = tf.extractfile(m).read()
            if sample:
                yield sample


def decode(mp4: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(mp4)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def main() -> None:
    from vtk.captions import fine_indices
    from vtk.captions.motion import clip_motion

    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--show", type=int, default=10)
    args = ap.parse_args()
    scores = {}
    try:
        import pandas as pd

        for f in (args.folder / "scores").glob("*.parquet"):
            df = pd.read_parquet(f)
            if "motion" in df:
                scores.update(zip(df["__key__"], df["motion"]))
    except ImportError:
        pass
    rows = []
    for s in clips(args.folder):
        meta = json.loads(s["json"])
        frames = decode(s["mp4"])
        idx = fine_indices(len(frames), meta["fps"], 4.0)
        m = clip_motion(frames[idx], [k / meta["fps"] for k in idx])
        steady = [p for p in m.pairs if not p.cut]

        def med(attr, steady=steady):
            return round(float(np.median([getattr(p, attr) for p in steady])), 3) if steady \
                else None
        rows.append({"key": s["key"], "start": meta["start"], "end": meta["end"],
                     "fine": meta["captions"].get("fine"), "words": m.words,
                     "flow_magnitude": round(m.score, 3), "pan_tx": med("tx"),
                     "tilt_ty": med("ty"), "zoom": med("zoom"), "moving_share": med("region"),
                     "cuts": sum(p.cut for p in m.pairs),
                     "vtk_score_motion": scores.get(s["key"])})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    pick = np.linspace(0, len(rows) - 1, min(args.show, len(rows))).round().astype(int)
    print("| scene (s) | fine caption | flow (widths/s) | pan x / tilt y (widths/s) | zoom (/s) "
          "| moving share | vtk score motion |")
    print("|---|---|---|---|---|---|---|")
    for i in pick:
        r = rows[i]
        vs = r["vtk_score_motion"]
        print(f"| {r['start']:.1f}-{r['end']:.1f} | {r['fine']} | {r['flow_magnitude']:.3f} | "
              f"{r['pan_tx']:+.3f} / {r['tilt_ty']:+.3f} | {r['zoom']:+.3f} | "
              f"{r['moving_share']:.2f} | {'-' if vs is None else f'{vs:.2f}'} |")
    words = [w for r in rows for w in r["words"]]
    kinds = {k: sum(k in w for w in words) for k in
             ("pans", "tilts", "zooms", "something", "still", "cut")}
    print(f"\n{len(rows)} clips; phrases: {kinds}")


if __name__ == "__main__":
    main()
