"""A small synthetic shard set for the training tests: real rendered clips of the synthetic
world, real H.264, the shard format of docs/architecture.md, captions from the generator's
grammar (coarse: appearance only; fine: appearance and motion)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import webdataset as wds
from data_helpers import encode

from vtk.sources.synth import K400_ACTIONS, describe, make_clip, parse_spec


def write_synth_shards(folder, n: int = 256, per_shard: int = 64, size: int = 32,
                       frames: int = 8, seed: int = 0) -> str:
    preset, _ = parse_spec(f"synth:train?n={n}&size={size}&frames={frames}")
    preset = type(preset)(**{**preset.__dict__, "actions": K400_ACTIONS})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for s0 in range(0, n, per_shard):
        with wds.TarWriter(str(folder / f"train-{s0 // per_shard:06d}.tar")) as tw:
            for i in range(s0, min(s0 + per_shard, n)):
                clip, truth = make_clip(preset, seed, i)
                rng = np.random.default_rng(i)
                coarse = f"a {truth['size']} {truth['colour']} {truth['shape']}"
                fine = describe(truth["action"], truth["shape"], truth["size"], truth["colour"], rng)
                meta = {"source": f"synth-{i}", "start": 0.0, "end": frames / 8, "fps": 8,
                        "num_frames": frames, "width": size, "height": size, "codec": "h264",
                        "captions": {"coarse": coarse, "fine": fine, "fused": f"{coarse}. {fine}"}}
                tw.write({"__key__": f"synth-{i:06d}_000000", "mp4": encode(clip),
                          "txt": fine, "json": json.dumps(meta).encode()})
    return str(folder)
