"""``filter_set``: a new shard set of the clips that a set's scores and the rules keep.

Why a new shard set and not a key list over the old tars: every reader of a shard set (the
streaming loader, the frame cache, DALI with its ``.idx`` offsets, ``vtk view``, webdataset over
S3 or HTTP, Hugging Face ``datasets``) reads whole tars in order, and none would need to learn
a key list; a key list would also make every epoch read and skip the dropped clips' bytes
(70% of them for a top-30% filter), and a filtered set could not be moved, shared or
published alone. The price is disk: the kept clips' bytes once more (the mp4s are copied
unchanged, never re-encoded). The kept rows of the sidecars (scores, hashes, embeddings) are
written for the new shards too, so a filtered set can be filtered again.

``OUT/index.json`` is a dataset card like ``vtk shard``'s, plus ``curation``: the parent set,
the rules in the order they apply (``vtk.curate.rules``), counts (input, kept, dropped per
reason) and a few dropped examples per reason with their scores and caption.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np

from vtk import __version__
from vtk.curate import dedup as D
from vtk.curate import sidecar
from vtk.curate.hashes import THRESHOLD
from vtk.curate.rules import Rules, parse_rules, top_count
from vtk.errors import VtkError

SHARD_FIELDS = ("name", "format", "members", "num_samples", "num_bytes", "num_shards",
                "shards", "set_sha256", "num_sources_completed", "failures", "curation")


class Table:
    """Every scored sample of a set, in set order: keys, scores, hashes, embeddings."""

    def __init__(self, folder: Path, tars: list[str], need_embed: bool,
                 hashes: dict[str, str] | None = None):
        """``hashes``: tar file name -> the sha256 index.json records (a sidecar scored on
        another build of a shard is refused)."""
        from vtk.shards.integrity import tar_keys

        self.keys, self.tar_of, self.errors = [], [], []
        self.scores: dict[str, list[float]] = {}
        self.pixels, self.nbytes, self.hashes, embs = [], [], [], []
        missing = [t for t in tars if not sidecar.sidecar_path(t).is_file()]
        if missing:
            raise VtkError(f"{missing[0]}: no score sidecar ({len(missing)} of {len(tars)} "
                           f"shards unscored); run: vtk score {folder} first")
        where: dict[str, int] = {}
        for ti, tar in enumerate(tars):
            t = sidecar.read_table(tar)
            # every row is its shard's, once, before anything is written (a short sidecar
            # would drop clips unseen, a foreign one keep the wrong ones)
            sidecar.check_table(tar, t, tar_keys(tar), (hashes or {}).get(Path(tar).name))
            n = t.num_rows
            for key in t.column("__key__").to_pylist():
                if key in where:
                    raise VtkError(f"{folder}: key {key!r} is in {Path(tars[where[key]]).name} "
                                   f"and {Path(tar).name}: a shard set holds each key once")
                where[key] = ti
            start = len(self.keys)
            self.keys += t.column("__key__").to_pylist()
            self.tar_of += [ti] * n
            self.errors += t.column("error").to_pylist()
            w = t.column("width").to_numpy()
            h = t.column("height").to_numpy()
            self.pixels += (w * h).tolist()
            self.nbytes += t.column("mp4_bytes").to_numpy().tolist()
            self.hashes += t.column("hashes").to_pylist()
            for name in sidecar.score_columns(t.column_names):
                col = self.scores.setdefault(name, [np.nan] * start)
                col += t.column(name).to_numpy(zero_copy_only=False).tolist()
            for col in self.scores.values():
                col += [np.nan] * (len(self.keys) - len(col))
            if need_embed:
                e = sidecar.read_embeddings(tar)
                if e is None:
                    raise VtkError(f"{tar}: no clip embeddings beside its sidecar; run vtk score "
                                   f"with --model or --init (scores clip-text) first")
                if e.ndim != 2 or e.shape[0] != n:
                    raise VtkError(f"{sidecar.embeddings_path(tar)}: shape {e.shape}, not one "
                                   f"row per sample of its sidecar ({n}); run: vtk score "
                                   f"{folder} --overwrite with --model or --init")
                embs.append(np.asarray(e, dtype=np.float32))
        self.emb = np.concatenate(embs) if embs else None
        self.scores_np = {k: np.asarray(v, dtype=np.float64) for k, v in self.scores.items()}

    def __len__(self):
        return len(self.keys)

    def score(self, name: str) -> np.ndarray:
        if name not in self.scores_np:
            known = ", ".join(sorted(self.scores_np)) or "none"
            raise VtkError(f"score {name!r} is not in the sidecars (they hold: {known}); "
                           f"score it with vtk score --scores ...")
        return self.scores_np[name]


def select(table: Table, rules: Rules, device: str = "cpu"):
    """Apply the rules (in their fixed order) -> (kept bool array, reason per dropped index,
    duplicate-of per index dropped by dedup)."""
    n = len(table)
    kept = np.ones(n, bool)
    reason: dict[int, str] = {}
    dup_of: dict[int, tuple[int, float]] = {}

    def drop(mask, why):
        for i in np.nonzero(mask & kept)[0].tolist():
            reason[i] = why
        kept[mask] = False

    needed = sorted(rules.scores_needed())
    for name in needed:
        drop(~np.isfinite(table.score(name)), "unscored")
    if rules.dedup == "frames":
        if n and not any(table.hashes):
            raise VtkError("--dedup frames needs frame hashes: run vtk score (its hashes score) "
                           "first")
        drop(np.array([not h for h in table.hashes], bool), "unscored")
    if rules.dedup and rules.dedup.startswith("embed"):
        if table.emb is None:
            raise VtkError("--dedup embed needs clip embeddings: run vtk score with a model")
        drop(~np.isfinite(table.emb).all(1), "unscored")
    for name, x in rules.min.items():
        drop(table.score(name) < x, f"min:{name}={x:g}")
    for name, x in rules.max.items():
        drop(table.score(name) > x, f"max:{name}={x:g}")
    if rules.dedup:
        idx = np.nonzero(kept)[0]
        if rules.dedup == "frames":
            hashes = np.array([table.hashes[i] for i in idx], dtype=np.uint64)
            pairs = D.frame_pairs(hashes, THRESHOLD) if len(idx) else []
        else:
            pairs = D.embed_pairs(table.emb[idx], rules.dedup_threshold(),
                                  device=device) if len(idx) else []
        score = {(i, j): s for i, j, s in pairs}
        for group in D.groups(len(idx), pairs):
            keep = D.keep_one(group, [table.pixels[i] for i in idx],
                              [table.nbytes[i] for i in idx])
            for g in group:
                if g != keep:
                    a, b = min(g, keep), max(g, keep)
                    dup_of[int(idx[g])] = (int(idx[keep]), score.get((a, b), float("nan")))
        mask = np.zeros(n, bool)
        mask[list(dup_of)] = True
        drop(mask, f"dedup:{rules.dedup}")
    for name, f in rules.top.items():
        idx = np.nonzero(kept)[0]
        k = top_count(f, len(idx))
        values = table.score(name)[idx]
        order = np.lexsort((idx, -values))  # highest first; ties: set order
        mask = np.zeros(n, bool)
        mask[idx[order[k:]]] = True
        drop(mask, f"top:{name}={f:g}")
    return kept, reason, dup_of


def _read_sample_info(tar: str, keys: set[str]) -> dict[str, dict]:
    from vtk.data.samples import read_members
    from vtk.shards.reader import read_samples

    out = {}
    for s in read_samples(tar):
        if s["__key__"] in keys:
            try:
                meta, txt = read_members(s)
            except ValueError:
                meta, txt = {}, None
            out[s["__key__"]] = {"txt": txt, "source": meta.get("source")}
    return out


def examples_of(table: Table, tars, reason, dup_of, per_reason: int) -> dict[str, list[dict]]:
    """A few dropped clips per reason: key, scores, training caption (duplicate of, cosine or
    Hamming distance, for dedup)."""
    chosen: dict[str, list[int]] = {}
    for i in sorted(reason):
        if len(chosen.setdefault(reason[i], [])) < per_reason:
            chosen[reason[i]].append(i)
    want: dict[int, set[str]] = {}
    for ids in chosen.values():
        for i in ids:
            want.setdefault(table.tar_of[i], set()).add(table.keys[i])
    info = {}
    for ti, keys in want.items():
        info.update(_read_sample_info(tars[ti], keys))
    out = {}
    for why, ids in chosen.items():
        rows = []
        for i in ids:
            key = table.keys[i]
            row = {"key": key, "caption": (info.get(key) or {}).get("txt"),
                   "scores": {k: round(float(v[i]), 4) for k, v in table.scores_np.items()
                              if np.isfinite(v[i])}}
            if i in dup_of:
                j, s = dup_of[i]
                row["duplicate_of"] = table.keys[j]
                row["similarity" if why.startswith("dedup:embed") else "hamming"] = round(s, 3)
            if table.errors[i]:
                row["error"] = table.errors[i]
            rows.append(row)
        out[why] = rows
    return out


def _copy(tars, table: Table, kept, writer) -> list[int]:
    """Write the kept samples through ``writer`` (crash-safe tars, .idx, stats); returns the
    table row of each written sample, in write order."""
    from vtk.data.samples import read_members
    from vtk.shards.reader import read_samples

    keep_keys = {}
    for i in np.nonzero(kept)[0].tolist():
        keep_keys.setdefault(table.tar_of[i], {})[table.keys[i]] = i
    placed: list[int] = []
    for ti, tar in enumerate(tars):
        wanted = keep_keys.get(ti)
        if not wanted:
            continue
        for s in read_samples(tar):
            i = wanted.get(s["__key__"])
            if i is None:
                continue
            meta, txt = read_members(s)
            if writer.add({"__key__": s["__key__"], "mp4": s["mp4"], "txt": txt or "",
                           "json": meta}):
                placed.append(i)
    return placed


def _prepare_out(folder: Path, out: Path):
    """``out`` checked and taken (its lock); an unfinished build of ``vtk filter`` in it (a
    killed run) is removed, to be written again whole. Returns the lock."""
    from vtk.locks import lock_folder
    from vtk.shards.integrity import finish_hint

    real, parent = out.resolve(), folder.resolve()
    if real == parent:
        raise VtkError(f"--out {out}: must differ from the shard set filtered")
    if parent in real.parents:
        raise VtkError(f"--out {out}: inside the shard set filtered ({folder}); its files "
                       f"would mix with the set's: choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise VtkError(f"--out {out}: exists and is not a folder")
    if (out / "index.json").exists():
        raise VtkError(f"--out {out} already holds a shard set: choose another folder")
    lock = lock_folder(out)
    try:
        stats = sorted(out.glob("stats/*-[0-9]*.json"))
        if not stats and any(out.glob("*.tar")):
            raise VtkError(f"--out {out} already holds tars: choose another folder")
        if stats and "vtk filter" not in finish_hint(str(out), [str(p) for p in stats]):
            raise VtkError(f"--out {out} holds an unfinished vtk shard build: "
                           f"{finish_hint(str(out), [str(p) for p in stats])}, or choose "
                           f"another folder")
        for pattern in ("*-[0-9]*.tar", "*-[0-9]*.tar.tmp", "*-[0-9]*.idx",
                        "stats/*-[0-9]*.json", f"{sidecar.SCORES_DIR}/*-[0-9]*.parquet",
                        f"{sidecar.SCORES_DIR}/{sidecar.EMB_DIR}/*-[0-9]*.npy",
                        f"{sidecar.SCORES_DIR}/{sidecar.SUMMARY}"):
            for path in out.glob(pattern):  # a killed filter's: written again below
                path.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


def _write_sidecars(out: Path, name: str, per_shard: int, placed: list[int], table: Table,
                    settings: dict, shard_hashes: dict[str, str | None]) -> None:
    emb = table.emb
    for s in range(0, len(placed), per_shard):
        rows_i = placed[s:s + per_shard]
        tar = out / f"{name}-{s // per_shard:06d}.tar"
        own = shard_hashes.get(tar.name)  # the new shard's, as vtk score would record it
        mine = {**settings, **({"tar_sha256": own} if own else {})}
        rows = []
        for i in rows_i:
            row = {"__key__": table.keys[i], "mp4_bytes": table.nbytes[i],
                   "hashes": table.hashes[i] or [], "error": table.errors[i]}
            row.update({k: v[i] for k, v in table.scores_np.items()})
            rows.append(row)
        e = emb[rows_i] if emb is not None else None
        sidecar.write_sidecar(tar, rows, {**mine, "copied_from": "parent"}, e)


def filter_set(folder, out, rules, *, samples_per_shard: int | None = None, examples: int = 3,
               device: str = "cpu", progress: bool = True, log=None) -> dict:
    """Filter the scored shard set ``folder`` into ``out`` (module docstring); returns the
    new set's index.json."""
    from vtk.data.shardset import resolve_shards
    from vtk.fileio import read_json, write_json
    from vtk.shards.integrity import card_name
    from vtk.shards.writer import ShardWriter

    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise VtkError(f"{folder}: shard set folder not found")
    if out.resolve() == folder.resolve():
        raise VtkError(f"--out {out}: must differ from the shard set filtered")
    rules = parse_rules(rules)
    tars = resolve_shards(str(folder))
    card = read_json(folder / "index.json", {}) or {}
    card = card if isinstance(card, dict) else {}
    need_embed = bool(rules.dedup and rules.dedup.startswith("embed"))
    hashes = {s["file"]: s["sha256"] for s in card.get("shards") or [] if isinstance(s, dict)
              and isinstance(s.get("file"), str) and isinstance(s.get("sha256"), str)}
    table = Table(folder, tars, need_embed, hashes)
    kept, reason, dup_of = select(table, rules, device)
    if not kept.any():
        raise VtkError(f"the rules ({rules}) keep none of the {len(table)} clips of {folder}: "
                       f"nothing written")
    name = card_name({"name": card.get("name") or "shard"}, str(folder))
    per_shard = samples_per_shard or max(
        [s.get("num_samples", 0) for s in card.get("shards") or [] if isinstance(s, dict)] +
        [1])
    command = (f"vtk filter {shlex.quote(str(folder))} --out {shlex.quote(str(out))} --rules "
               f"{shlex.quote(str(rules))}" + (f" --samples-per-shard {samples_per_shard}"
                                               if samples_per_shard else ""))
    lock = _prepare_out(folder, out)
    try:  # the stats say who builds the set: an unfinished one is known for vtk filter's
        writer = ShardWriter(str(out), name=name, samples_per_shard=per_shard, settings={
            "filter": {"parent": str(folder.resolve()), "rules": rules.as_list(),
                       "command": command}})
    finally:
        lock.release()  # the writer holds the folder's lock now
    try:
        placed = _copy(tars, table, kept, writer)
        writer.end_shard()  # the last, short shard too: its sidecar records its hash
        if len(placed) != int(kept.sum()):  # checked before index.json: never a whole set
            raise VtkError(f"{out}: wrote {len(placed)} samples, expected {int(kept.sum())}")
    except BaseException:
        writer.abort()
        raise
    dropped: dict[str, int] = {}
    for why in reason.values():
        dropped[why] = dropped.get(why, 0) + 1
    order = ["unscored", *[r for r in rules.as_list() if r in dropped]]
    dropped = {k: dropped[k] for k in order if k in dropped}
    curation = {
        "parent": str(folder.resolve()),
        "parent_name": card.get("name"),
        "parent_scores": read_json(folder / sidecar.SCORES_DIR / sidecar.SUMMARY, {}) or {},
        "rules": rules.as_list(),
        "order": "unscored, min, max, dedup, top (top is a share of what the others kept)",
        "top_rounding": "floor(fraction * n + 0.5): nearest, halves up",
        "dedup_frames_threshold": THRESHOLD if rules.dedup == "frames" else None,
        "counts": {"input": len(table), "kept": int(kept.sum()), "dropped": dropped},
        "examples": examples_of(table, tars, reason, dup_of, examples),
        "vtk_version": __version__,
    }
    curation["parent_scores"] = {k: curation["parent_scores"].get(k) for k in
                                 ("model", "init", "checkpoint", "scores_computed")
                                 if curation["parent_scores"].get(k) is not None}
    extra = {k: v for k, v in card.items() if k not in SHARD_FIELDS}
    settings = {"scores": sorted(table.scores_np), **curation["parent_scores"]}
    try:  # the sidecars first: index.json, written by close, is the set's completion mark
        shard_hashes = {s["shard"]: s.get("sha256") for s in writer.shards.values()}
        _write_sidecars(out, name, per_shard, placed, table, settings, shard_hashes)
        path = out / sidecar.SCORES_DIR / sidecar.SUMMARY
        try:
            write_json(path, {"folder": str(out.resolve()), "copied_from": str(folder.resolve()),
                              "samples": len(placed)})
        except OSError as e:
            raise VtkError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        writer.abort()
        raise
    return writer.close({**extra, "command": command, "curation": curation})


def drop_table(index: dict) -> list[tuple[str, int, str]]:
    """(reason, count, first example as text) rows of a filtered set's card."""
    cur = index.get("curation") or {}
    rows = []
    for why, n in (cur.get("counts") or {}).get("dropped", {}).items():
        ex = (cur.get("examples") or {}).get(why) or []
        text = ""
        if ex:
            e = ex[0]
            bits = [e["key"]]
            if e.get("duplicate_of"):
                bits.append(f"duplicate of {e['duplicate_of']}")
            bits += [f"{k} {v:.3f}" for k, v in e.get("scores", {}).items()
                     if k in ("clip-text", "motion")]
            if e.get("caption"):
                bits.append(json.dumps(e["caption"][:60]))
            text = "; ".join(bits)
        rows.append((why, n, text))
    return rows


__all__ = ["Table", "drop_table", "filter_set", "select"]
