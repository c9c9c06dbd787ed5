"""Data curation: score a shard set with a model, filter it, remove near-duplicates.

InternVid keeps the clips whose video-text similarity (UMT_Score) is in the top 30%; NeMo
Curator filters on motion and removes semantic duplicates. vtk closes the same loop on its own
shards: ``score_set`` writes per-shard score sidecars, ``filter_set`` writes a new shard set of
the clips the rules keep (docs/curation.md has the decisions and the figures).

Library API (what ``vtk score``, ``vtk filter`` and ``vtk ablate filter`` call)::

    from vtk.curate import score_set, filter_set, parse_rules, load_sidecar

    summary = score_set(dir, model=None, init=None, scores=None, *, device="auto",
                        batch_size=16, overwrite=False, progress=True, log=None) -> dict
        # model: a run folder (vtk train --out); init: a saved transformers CLIPModel.
        # scores: iterable of SCORES names ("clip-text", "motion", "motion-flow", "hashes");
        # None = clip-text, motion and hashes (clip-text only with a model or init). Writes
        # DIR/scores/NAME-000000.parquet (and _embeddings/NAME-000000.npy with clip-text) per
        # shard, skips shards done with the same settings, splits shards over torchrun ranks.
        # Returns what it writes to DIR/scores/_summary.json.

    index = filter_set(dir, out, rules, *, samples_per_shard=None, examples=3,
                       progress=True, log=None) -> dict
        # rules: a Rules, a rule string ("top:clip-text=0.3, dedup:frames") or a list of them.
        # Writes OUT as a new shard set (members copied unchanged) with sidecars for the kept
        # rows; returns OUT/index.json, whose "curation" holds parent, rules, counts, examples.

    rules = parse_rules("min:clip-text=0.25, top:clip-text=0.3, dedup:embed:0.95") -> Rules
    parse_rules("none") -> Rules()   # keeps everything (the ablation's baseline arm)
    Rules(min={"clip-text": 0.25}, max={}, top={"clip-text": 0.3}, dedup="frames" | "embed:0.95")

    load_sidecar(tar_path) -> dict[key, dict[str, float]] | None   # the loader's per-shard call
    motion.motion_score(frames uint8 T x H x W x 3, fps) -> float
    motion.flow_fields(frames) -> list[float32 h x w x 2]   # Farneback flow between frames
    hashes.clip_hashes(frames) -> uint64 array (K,)         # DCT pHash of K sampled frames

Score names (sidecar columns, and ``sample["meta"]["scores"]`` keys): ``clip-text`` (cosine
with the training text, the ``txt`` member), ``clip-text.coarse``, ``clip-text.fine``,
``clip-text.fused``, ``clip-text.caption`` (the source's own caption), ``motion``.
"""

from __future__ import annotations

from vtk.curate.rules import Rules, parse_rules, top_count
from vtk.curate.sidecar import load_sidecar


def score_set(*args, **kwargs):
    from vtk.curate.score import score_set as _score_set

    return _score_set(*args, **kwargs)


def filter_set(*args, **kwargs):
    from vtk.curate.filter import filter_set as _filter_set

    return _filter_set(*args, **kwargs)


__all__ = ["Rules", "filter_set", "load_sidecar", "parse_rules", "score_set", "top_count"]
