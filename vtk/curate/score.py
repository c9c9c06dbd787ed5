"""``score_set``: score every clip of a shard set and write one sidecar per shard.

``motion`` reads the clip's own H.264 motion vectors (``vtk.curate.vectors``: no frame is
converted, no flow computed). One decode per clip serves every score that needs frames: the
whole clip (PyAV) gives the Farneback motion score (``motion-flow``, the reference) and the
frame hashes, and the model's ``frames`` evenly spaced frames, centre-cropped and normalised
as ``vtk eval`` does, give the clip embedding. ``clip-text`` is the cosine of that embedding
with the text tower's embedding of each caption the sample carries (the model's own
similarity, as InternVid's UMT_Score is UMT's). The embeddings are kept (``scores/_embeddings/``) for
``vtk filter --dedup embed:T``.

Resumable: a shard whose sidecar was written with the same settings (scores, model and its
checkpoint, frames, size, the tar's size) is skipped; a killed run leaves no sidecar for the
shard it was on. Under torchrun the shards are split over the ranks (shard i to rank
i mod world), each on its own GPU; rank 0 writes the summary after a barrier.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from vtk import __version__
from vtk.curate import hashes as H
from vtk.curate import motion as M
from vtk.curate import sidecar
from vtk.errors import VtkError
from vtk.fileio import write_json
from vtk.train import runtime

SCORES = ("clip-text", "motion", "motion-flow", "hashes")
DEFAULT_SCORES = ("clip-text", "motion", "hashes")  # motion-flow: the reference, on request
FRAME_SCORES = {"clip-text", "motion-flow", "hashes"}  # what needs the clip's decoded frames
CAPTION_KINDS = ("coarse", "fine", "fused")


def parse_scores(scores, have_model: bool) -> tuple[str, ...]:
    """The score names to compute (None: every one possible)."""
    if scores is None:
        return tuple(s for s in DEFAULT_SCORES if have_model or s != "clip-text")
    if isinstance(scores, str):
        scores = [s.strip() for s in scores.split(",") if s.strip()]
    bad = [s for s in scores if s not in SCORES]
    if bad:
        raise VtkError(f"--scores {','.join(bad)}: unknown score (known: {', '.join(SCORES)})")
    if "clip-text" in scores and not have_model:
        raise VtkError("--scores clip-text needs a model: pass --model RUN or --init CLIP")
    if not scores:
        raise VtkError("--scores: give at least one of " + ", ".join(SCORES))
    return tuple(s for s in SCORES if s in scores)


def load_model(model, init, device, frames: int = 8):
    """(model in eval mode, frames, size, normalisation, provenance dict)."""
    if model is not None and init is not None:
        raise VtkError("give --model RUN or --init CLIP, not both")
    if model is not None:
        from vtk.eval.evaluate import checkpoint_info
        from vtk.train import load_run

        net, config = load_run(model, device)
        info = {"model": str(Path(model).resolve()), "checkpoint": checkpoint_info(Path(model))}
        info["checkpoint"].pop("path", None)
        normalize = (config or {}).get("normalize", "clip")
    else:
        from vtk.model import build_model

        net = build_model(dict(init=str(init), frames=frames)).to(device).eval()
        info = {"init": str(init)}
        normalize = "clip"
    cfg = net.cfg
    return net, int(cfg.frames), int(cfg.size), normalize, info


def caption_texts(meta: dict, txt: str | None) -> dict[str, str]:
    """Score name -> the text it compares with, for the captions this sample carries."""
    caps = meta.get("captions") if isinstance(meta.get("captions"), dict) else {}
    out = {f"clip-text.{k}": caps[k] for k in CAPTION_KINDS if isinstance(caps.get(k), str)
           and caps[k].strip()}
    if isinstance(meta.get("caption"), str) and meta["caption"].strip():
        out["clip-text.caption"] = meta["caption"]
    main = (txt or "").strip() or next(
        (out[f"clip-text.{k}"] for k in ("fused", "fine", "coarse", "caption")
         if f"clip-text.{k}" in out), "")
    if main:
        out["clip-text"] = main
    return out


class _Batch:
    """Clips waiting for one forward of the model."""

    def __init__(self):
        self.rows, self.videos, self.texts = [], [], []

    def __len__(self):
        return len(self.rows)


@torch.no_grad()
def _forward(net, batch: _Batch, device, embs: dict) -> None:
    """Embed the batch's clips and texts; fill each row's clip-text scores and ``embs``."""
    if not batch.rows:
        return
    video = torch.stack(batch.videos).to(device, non_blocking=True)
    autocast, _ = runtime.autocast(device, "auto")  # the trainer's mixed precision
    unique = sorted({t for texts in batch.texts for t in texts.values()})
    with autocast():
        v = net.encode_video(video).float()
        # a set without captions (vtk shard --captions none, no txt) still gets embeddings
        t = torch.cat([net.encode_text(unique[i:i + 256]).float()
                       for i in range(0, len(unique), 256)]) if unique else v[:0]
    v = torch.nn.functional.normalize(v, dim=-1)
    t = torch.nn.functional.normalize(t, dim=-1)
    sims = (v @ t.T).cpu().numpy()
    where = {s: i for i, s in enumerate(unique)}
    v = v.cpu().numpy()
    for b, (row, texts) in enumerate(zip(batch.rows, batch.texts)):
        for name, text in texts.items():
            row[name] = float(sims[b, where[text]])
        embs[row["__key__"]] = v[b]
    batch.rows, batch.videos, batch.texts = [], [], []


def prepare(sample: dict, wanted, frames: int, size: int, normalize: str, decoder):
    """One sample -> (sidecar row, model input T x 3 x S x S or None, texts). Runs in a
    decode thread: PyAV and OpenCV release the GIL, so threads scale the CPU side."""
    from vtk.curate.vectors import vector_motion
    from vtk.data.samples import checked_members, decode_whole
    from vtk.data.sampling import eval_indices
    from vtk.data.transforms import eval_crop

    row = {"__key__": sample["__key__"], "mp4_bytes": len(sample.get("mp4") or b"")}
    try:
        video = codec = None
        if FRAME_SCORES & set(wanted):
            meta, txt, video = decode_whole(sample, decoder)
        else:  # motion alone: the vectors need no decoded frame
            meta, txt = checked_members(sample)
        fps = float(meta.get("fps") or 0) or 8.0
        if "motion" in wanted:
            codec = vector_motion(sample["mp4"], fps)
            if codec.score is None and video is None:  # no vectors in this codec: the flow's
                meta, txt, video = decode_whole(sample, decoder)
    except Exception as e:  # noqa: BLE001 - one bad sample is recorded, never fatal
        row["error"] = f"{type(e).__name__}: {e}"[:300]
        return row, None, None
    if video is not None:
        row.update(width=int(video.shape[2]), height=int(video.shape[1]),
                   num_frames=int(video.shape[0]))
    else:
        row.update(width=codec.width, height=codec.height, num_frames=codec.frames)
    frames_np = video.numpy() if video is not None else None
    if "motion" in wanted:
        row["motion"] = codec.score if codec.score is not None else M.motion_score(frames_np, fps)
    if "motion-flow" in wanted:
        row["motion-flow"] = M.motion_score(frames_np, fps)
    if "hashes" in wanted:
        row["hashes"] = H.clip_hashes(frames_np).tolist()
    if "clip-text" not in wanted:
        return row, None, None
    clip = eval_crop(video[eval_indices(video.shape[0], frames)], size, norm=normalize)
    return row, clip, caption_texts(meta, txt)


def _in_order(fn, items, workers: int):
    """``map(fn, items)`` in order, on ``workers`` threads with at most 2 x workers samples in
    flight (0: in this thread)."""
    if workers <= 0:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="vtk-score") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def score_shard(tar: str, wanted, settings: dict, net=None, frames: int = 8, size: int = 224,
                normalize: str = "clip", device=None, batch_size: int = 16,
                advance=lambda n: None, workers: int = 0) -> dict:
    """Score one tar and write its sidecar. Returns {"samples", "errors"}."""
    import threading

    from vtk.data.decoders import get_decoder
    from vtk.data.shardset import looks_truncated
    from vtk.shards.reader import read_samples

    if looks_truncated(tar):  # tarfile stops quietly at a cut: its last samples would be lost
        raise VtkError(f"{tar}: cannot be read to the end (cut short: not whole 512-byte "
                       f"blocks closed by two zero blocks); no sidecar written for it")
    local = threading.local()  # one decoder a thread

    def work(sample):
        if not hasattr(local, "decoder"):
            local.decoder = get_decoder("pyav")
        return prepare(sample, wanted, frames, size, normalize, local.decoder)

    rows, embs, batch = [], {}, _Batch()
    errors = 0
    for row, clip, texts in _in_order(work, _guarded(read_samples(tar), tar), workers):
        rows.append(row)
        errors += "error" in row
        if clip is not None:
            batch.rows.append(row)
            batch.videos.append(clip)
            batch.texts.append(texts)
            if len(batch) >= batch_size:
                _forward(net, batch, device, embs)
        advance(1)
    _forward(net, batch, device, embs)
    emb = None
    if "clip-text" in wanted:
        dim = next((len(e) for e in embs.values()), 0)
        emb = np.full((len(rows), dim), np.nan, np.float32)
        for i, row in enumerate(rows):
            if row["__key__"] in embs:
                emb[i] = embs[row["__key__"]]
    sidecar.write_sidecar(tar, rows, settings, emb)
    return {"samples": len(rows), "errors": errors}


def _guarded(samples, tar: str):
    """The samples of a tar; an error of the tar itself (cut short, not a tar) is one
    VtkError line naming it."""
    it = iter(samples)
    while True:
        try:
            sample = next(it)
        except StopIteration:
            return
        except (OSError, EOFError, ValueError) as e:  # tarfile.ReadError is an OSError
            raise VtkError(f"{tar}: cannot be read to the end ({e}); no sidecar written for "
                           f"it") from None
        yield sample


def _shard_hashes(folder: Path) -> dict[str, str]:
    """tar file name -> the sha256 index.json records for it (none for an older set)."""
    from vtk.fileio import read_json

    card = read_json(folder / "index.json", {}) or {}
    shards = card.get("shards") if isinstance(card, dict) else None
    return {s["file"]: s["sha256"] for s in shards or [] if isinstance(s, dict)
            and isinstance(s.get("file"), str) and isinstance(s.get("sha256"), str)}


def sound(tar: str, shard_hash: str | None) -> bool:
    """Whether a shard's sidecar belongs to it as it is now (``sidecar.check_table``): a
    sidecar cut short, with foreign or doubled keys or a text score column is rescored."""
    from vtk.shards.integrity import tar_keys

    try:
        sidecar.check_table(tar, sidecar.read_table(tar), tar_keys(tar), shard_hash)
    except VtkError:
        return False
    return True


def _shard_counts(folder: Path, tars: list[str]) -> dict[str, int]:
    from vtk.fileio import read_json

    card = read_json(folder / "index.json", {}) or {}
    listed = {s.get("file"): s.get("num_samples") for s in card.get("shards") or []
              if isinstance(s, dict)} if isinstance(card, dict) else {}
    out = {}
    for t in tars:
        n = listed.get(os.path.basename(t))
        if not isinstance(n, int):
            try:
                with open(os.path.splitext(t)[0] + ".idx") as f:
                    n = int(f.readline().split()[1])
            except (OSError, ValueError, IndexError):
                n = 0
        out[t] = n
    return out


def summarize(folder: Path, tars: list[str]) -> dict:
    """Per score: count, mean, min, max over every shard's sidecar."""
    totals: dict[str, list[float]] = {}
    samples = errors = 0
    for tar in tars:
        table = sidecar.read_table(tar)
        if table is None:
            continue
        samples += table.num_rows
        errors += sum(e is not None for e in table.column("error").to_pylist())
        for name in sidecar.score_columns(table.column_names):
            v = table.column(name).to_numpy(zero_copy_only=False)
            totals.setdefault(name, []).extend(v[np.isfinite(v)].tolist())
    stats = {name: {"count": len(v), "mean": float(np.mean(v)), "min": float(np.min(v)),
                    "max": float(np.max(v))} for name, v in sorted(totals.items()) if v}
    return {"samples": samples, "errors": errors, "scores": stats}


def score_set(folder, model=None, init=None, scores=None, *, device: str = "auto",
              batch_size: int = 16, workers: int | None = None, overwrite: bool = False,
              progress: bool = True,
              log=None) -> dict:
    """Score the shard set in ``folder`` (module docstring); returns the summary that is also
    written to ``folder/scores/_summary.json``."""
    from vtk.data.shardset import resolve_shards
    from vtk.train import dist

    if "://" in str(folder):
        raise VtkError(f"{folder}: vtk score writes its sidecars beside the tars, so it needs a "
                       f"local shard set folder (copy the set here first)")
    folder = Path(folder)
    if not folder.is_dir():
        raise VtkError(f"{folder}: shard set folder not found")
    if batch_size < 1:
        raise VtkError(f"--batch-size {batch_size}: must be at least 1")
    if workers is not None and workers < 0:
        raise VtkError(f"--workers {workers}: must be at least 0")
    tars = resolve_shards(str(folder))
    wanted = parse_scores(scores, model is not None or init is not None)
    sidecar._pa()  # pyarrow writes the sidecars: a missing one is told before any clip is scored
    d = dist.setup(device)
    net, frames, size, normalize, info = None, 8, 224, "clip", {}
    if "clip-text" in wanted:
        net, frames, size, normalize, info = load_model(model, init, d.device)
    base = {"scores": list(wanted), **info, "frames": frames, "size": size,
            "normalize": normalize,
            "motion": {"from": "codec motion vectors (h264 P-frames); flow for other codecs"},
            "motion-flow": {"side": M.ANALYSIS_SIDE, "pairs": M.PAIRS},
            "hashes": {"k": H.K, "kind": "dct-phash-64"}}
    counts = _shard_counts(folder, tars)
    # decode threads: the cores this rank may use, less one for the model (None: automatic)
    threads = workers if workers is not None else max(0, min(8, (os.cpu_count() or 1) //
                                                            d.world - 1))
    hashes = _shard_hashes(folder)
    mine = tars[d.rank::d.world]
    todo, skipped, repaired = [], 0, 0
    for tar in mine:
        settings = {**base, "tar_bytes": os.path.getsize(tar)}
        if os.path.basename(tar) in hashes:  # the shard it belongs to, by construction
            settings["tar_sha256"] = hashes[os.path.basename(tar)]
        old = sidecar.read_settings(tar)
        if old is not None and {k: v for k, v in old.items() if k != "vtk_version"} == settings \
                and not overwrite:
            if sound(tar, settings.get("tar_sha256")):
                skipped += 1
                continue
            repaired += 1  # same settings, rows that are not its shard's: scored again
            todo.append((tar, {**settings, "vtk_version": __version__}))
            continue
        if old is not None and not overwrite:
            raise VtkError(f"{sidecar.sidecar_path(tar)} was written with other settings "
                           f"({_differs(old, settings)}): pass --overwrite to score again")
        todo.append((tar, {**settings, "vtk_version": __version__}))
    from vtk.progress import over_shards

    t0 = time.perf_counter()
    done, errors = over_shards(
        todo, lambda tar, settings, advance: score_shard(
            tar, wanted, settings, net, frames, size, normalize, d.device, batch_size, advance,
            threads),
        "scoring", "score", sum(counts[t] for t, _ in todo), progress and d.rank == 0, log)
    seconds = time.perf_counter() - t0
    scored, skipped, done, repaired = _sum_over_ranks(d, len(todo), skipped, done, repaired)
    summary = {"folder": str(folder.resolve()), "scores_computed": list(wanted), **info,
               "device": str(d.device), "world_size": d.world, "shards": len(tars),
               "rank": d.rank, "shards_scored": scored, "shards_skipped": skipped,
               "shards_repaired": repaired,
               "samples_scored": done, "seconds": round(seconds, 3),
               "clips_per_s": round(done / seconds, 2) if seconds > 0 and done else None,
               "vtk_version": __version__}
    summary.update(summarize(folder, tars))
    if d.rank == 0:
        path = folder / sidecar.SCORES_DIR / sidecar.SUMMARY
        try:
            write_json(path, summary)
        except OSError as e:
            raise VtkError(f"cannot write {path}: {e.strerror or e}; every sidecar is "
                           f"complete, only this summary (vtk filter's provenance) is not: "
                           f"free some space and run vtk score {folder} again") from None
    return summary


def _sum_over_ranks(d, *counts) -> list[int]:
    """The counts summed over the torchrun ranks (also the barrier before the summary)."""
    if d.world == 1:
        return list(counts)
    import torch.distributed as tdist

    t = torch.tensor(counts, dtype=torch.int64,
                     device=d.device if d.device.type == "cuda" else "cpu")
    tdist.all_reduce(t)
    return [int(x) for x in t.tolist()]


def _differs(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if k != "vtk_version" and old.get(k) !=
            new.get(k)]
    return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:2])
