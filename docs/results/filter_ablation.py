"""The filter ablation on the noisy synthetic world, at a size that fits a loaded 2-core machine.

    python docs/results/filter_ablation.py --out runs/filter --clips 1000 --steps 300 \
        --bench 'synth:k400?n=120' --bench 'synth:msrvtt?n=120'

Shards ``synth:train?n=N`` (clean) and its noisy twin ``&noise=0.3&dups=0.1`` with fine
captions, then runs ``vtk.ablate.run_filter`` with the arms ``none; top:clip-text=0.3;
dedup:0.95`` and the clean arm, with the demo's model (tiny ViCLIP, frozen MiniLM, a 256-d joint
space) and decoded-frame cache, and prints ``vtk report``'s markdown. ``vtk demo --filter`` is
the same study at the demo's plan (4000 clips, 800 steps of 64).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    from vtk import report
    from vtk.ablate import parse_arm_rules, run_filter
    from vtk.fileio import read_json, write_json
    from vtk.shards import build_shard_set

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=1000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rules", default="none; top:clip-text=0.3; dedup:0.95")
    ap.add_argument("--noise", default="noise=0.3&dups=0.1")
    ap.add_argument("--bench", action="append", default=None)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    times = {}
    spec = f"synth:train?n={args.clips}&size={args.size}&seed=0"
    sets = {"clean": (out / "shards" / "clean", spec),
            "noisy": (out / "shards" / "noisy", f"{spec}&{args.noise}")}
    for name, (folder, source) in sets.items():
        if read_json(folder / "index.json") is None:
            t = time.perf_counter()
            print(f"sharding {source} -> {folder}", flush=True)
            build_shard_set([source], str(folder), captions="fine", clip_mode="whole",
                            workers=args.workers, resume=True)
            times[f"shard_{name}_s"] = round(time.perf_counter() - t, 1)
    base = dict(model="tiny", text="minilm", embed_dim=256, steps=args.steps, unmasked_steps=0,
                batch_size=args.batch_size, cache=str(out / "cache"), workers=0, device="cpu",
                mask=0.0, captions="fine", quiet=True)
    benches = args.bench or ["synth"]
    t = time.perf_counter()
    run_filter(sets["noisy"][0], out / "runs", parse_arm_rules(args.rules), 1, base, benches,
               clean=sets["clean"][0], eval_opts={"device": "cpu", "cache": str(out / "bench")},
               log=lambda line: print(f"ablate {line}", flush=True))
    times["arms_s"] = round(time.perf_counter() - t, 1)
    arms = report.collect([out / "runs"])
    md = report.render_text(arms, "markdown")
    (out / "report.md").write_text(md + "\n")
    report.plot(arms, out / "filter.png")
    times["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(out / "times.json", {"args": vars(args) | {"out": str(out)}, **times})
    print(md)
    print(times)


if __name__ == "__main__":
    main()
