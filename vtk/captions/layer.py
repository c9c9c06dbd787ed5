"""Caption layers: captions added to a shard set without rewriting it (``vtk caption``).

Layout, for a layer ``NAME`` of a shard ``DIR/shard-000000.tar``::

    DIR/captions/NAME/shard-000000.parquet   one row per sample, keyed by __key__, tar order
    DIR/captions/NAME/_layer.json            what the layer holds: models, prompt hash, counts
    DIR/captions/NAME/.cache/                the caption cache a killed run resumes from

as ``vtk score`` keeps its scores (``vtk.curate.sidecar``): the tars stay byte for byte what
``vtk shard`` wrote; another captioner is another layer beside it; Parquet is read without vtk
(``pd.read_parquet("DIR/captions/NAME")``). Columns: ``__key__``; ``coarse``, ``fine``,
``fused`` (null where the layer has no such scale or the clip has none); ``text``, the layer's
caption (fused when it has both scales, else the one it has); ``info``, the clip's
``caption_models``, ``caption_info`` and ``caption_errors`` as JSON; ``error``, null or why a
caption is missing. The file's schema metadata ``vtk`` holds the settings (``caption_set``).

How a layer is read: ``vtk train --captions NAME`` (and ``vtk ablate captions --arms ...,NAME``)
trains on ``text``, ``NAME.coarse`` / ``NAME.fine`` on one scale (``merge_layer`` puts them in a
sample's ``captions`` as those keys); a clip the layer failed on is skipped and counted
(``uncaptioned``). ``vtk view`` shows a column per layer, ``vtk inspect`` lists the layers.

``caption_set`` captions a set into a layer: resumable (a shard whose sidecar has the same
settings is skipped; clips of a shard cut off by a kill come from the caption cache), shards
split over torchrun's ranks (shard i to rank i mod world) as ``vtk score`` does.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from functools import lru_cache
from pathlib import Path

from vtk import storage
from vtk.errors import VtkError

LAYERS_DIR = "captions"
LAYER_CARD = "_layer.json"
CACHE = ".cache"
SCALES = ("coarse", "fine", "fused")
META_KEY = b"vtk"
# caption names a sample's json or the loader already give a meaning
RESERVED = ("coarse", "fine", "both", "mixed", "txt", "fused", "frames", "none")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_name(name: str) -> str:
    """A layer's name: letters, digits, '_' and '-', not a built-in caption name."""
    if not _NAME.fullmatch(name or ""):
        raise VtkError(f"--as {name!r}: a layer name is letters, digits, '_' and '-' (at most "
                       f"64, starting with a letter or digit)")
    if name in RESERVED:
        raise VtkError(f"--as {name}: a built-in caption name; pick another "
                       f"(not {', '.join(RESERVED)})")
    return name


def layer_of(captions: str) -> str | None:
    """The layer a ``--captions`` value reads ('NAME' or 'NAME.fine' -> 'NAME'), None for the
    built-in modes."""
    from vtk.types import CAPTION_MODES

    if captions in CAPTION_MODES:
        return None
    return captions.split(".", 1)[0]


def _base(tar: str) -> tuple[str, str]:
    """(the set's folder or URL, the shard's stem)."""
    tar = str(tar)
    base, name = storage.parent(tar), storage.basename(tar)
    return base, name[:-4] if name.endswith(".tar") else name


def layer_dir(folder: str, name: str) -> str:
    return storage.join(str(folder).rstrip("/"), LAYERS_DIR, name)


def layer_path(tar: str, name: str) -> str:
    base, stem = _base(tar)
    return storage.join(layer_dir(base, name), stem + ".parquet")


def list_layers(folder: str) -> list[str]:
    """The caption layers of a shard set (folders under ``captions/`` holding a sidecar)."""
    folder = str(folder).rstrip("/")
    found = storage.glob(storage.join(folder, LAYERS_DIR, "*", "*.parquet"))
    return sorted({p.replace(os.sep, "/").rstrip("/").rsplit("/", 2)[-2] for p in found})


def read_card(folder: str, name: str) -> dict:
    """The layer's ``_layer.json`` ({} when absent or unreadable)."""
    try:
        data = storage.read_json(_card_path(folder, name))
    except Exception:  # noqa: BLE001 - absent, unreadable, or an object store's not-found
        return {}
    return data if isinstance(data, dict) else {}


def layer_fingerprint(folder: str, name: str) -> str:
    """What the layer's sidecars are now (their names and stamps): "" when there is none."""
    import hashlib

    found = storage.glob(storage.join(layer_dir(folder, name), "*.parquet"))
    if not found:
        return ""
    stamps = [(os.path.basename(p), _stat(p)) for p in found]
    return hashlib.sha1(json.dumps(stamps).encode()).hexdigest()[:12]


# --- sidecars -----------------------------------------------------------------------------------


def _pa():
    from vtk.curate.sidecar import _pa as load

    return load()


def main_text(row: dict) -> str | None:
    """A layer's caption of one clip: fused, else fine, else coarse."""
    return row.get("fused") or row.get("fine") or row.get("coarse")


def write_shard(tar: str, name: str, rows: list[dict], settings: dict) -> str:
    """The sidecar of one shard (``rows``: one dict per sample, tar order); written whole under
    a temporary name, so a final name means a complete shard."""
    pa, pq = _pa()
    cols = {"__key__": pa.array([r["__key__"] for r in rows], pa.string())}
    for scale in SCALES:
        cols[scale] = pa.array([r.get(scale) for r in rows], pa.string())
    cols["text"] = pa.array([main_text(r) for r in rows], pa.string())
    cols["info"] = pa.array([json.dumps(r.get("info") or {}, ensure_ascii=False)
                             for r in rows], pa.string())
    cols["error"] = pa.array([r.get("error") for r in rows], pa.string())
    table = pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(settings)})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = layer_path(tar, name)
    try:
        storage.makedirs(storage.parent(path))
        storage.write_bytes(path, buf.getvalue())
    except OSError as e:
        raise VtkError(f"cannot write {path}: {e.strerror or e}") from None
    _cached.cache_clear()
    return path


def _stat(path: str) -> str | None:
    try:
        return storage.stamp(path)
    except Exception:  # noqa: BLE001 - absent (an object store's "not found" is its own error)
        return None


def _source(path: str):
    return path if storage.store(path).local else io.BytesIO(storage.read_bytes(path))


def _read_table(path: str, columns=None):
    _, pq = _pa()
    try:
        return pq.read_table(_source(path), columns=columns)
    except (OSError, ValueError) as e:
        raise VtkError(f"{path}: unreadable caption layer sidecar ({e}); run vtk caption "
                       f"again with --overwrite") from None


def read_settings(tar: str, name: str) -> dict | None:
    """The settings a shard's sidecar was written with, None when there is none (or it cannot
    be read: then the shard counts as not done)."""
    path = layer_path(tar, name)
    if _stat(path) is None:
        return None
    _, pq = _pa()
    try:
        return json.loads((pq.read_schema(_source(path)).metadata or {}).get(META_KEY, b"{}"))
    except (OSError, ValueError):
        return None


def read_shard(tar: str, name: str):
    """A shard's sidecar as a pyarrow Table (None when absent)."""
    path = layer_path(tar, name)
    return None if _stat(path) is None else _read_table(path)


@lru_cache(maxsize=8)
def _cached(path: str, stamp) -> dict:
    table = _read_table(path, ["__key__", *SCALES, "text", "error"])
    cols = {c: table.column(c).to_pylist() for c in table.column_names}
    return {key: {c: cols[c][i] for c in cols if c != "__key__" and cols[c][i] is not None}
            for i, key in enumerate(cols["__key__"])}


def load_layer(tar: str, name: str) -> dict[str, dict] | None:
    """``{__key__: {"text", "coarse", "fine", "fused", "error"}}`` (nulls left out) of one
    shard's sidecar, None when the shard has none. The last 8 read are cached (keyed by the
    file's mtime and size): an epoch costs one Parquet read per shard."""
    path = layer_path(tar, name)
    stamp = _stat(path)
    return None if stamp is None else _cached(path, stamp)


def merge_layer(meta: dict, name: str, row: dict | None) -> dict:
    """``meta`` with layer ``name``'s captions of the sample (a ``load_layer`` row) in
    ``meta["captions"]`` as ``NAME`` (its caption) and ``NAME.coarse`` / ``NAME.fine`` /
    ``NAME.fused``, and its failure in ``meta["caption_errors"][NAME]``; ``meta`` itself is
    not changed. A layer's caption wins over one of the same name in the json."""
    if not row:
        return meta
    caps = dict(meta.get("captions") if isinstance(meta.get("captions"), dict) else {})
    if row.get("text"):
        caps[name] = row["text"]
    for scale in SCALES:
        if row.get(scale):
            caps[f"{name}.{scale}"] = row[scale]
    out = {**meta, "captions": caps}
    if row.get("error"):
        errors = meta.get("caption_errors") if isinstance(meta.get("caption_errors"), dict) \
            else {}
        out["caption_errors"] = {**errors, name: row["error"]}
    return out


# --- vtk caption ----------------------------------------------------------------------------------


def _clip(sample: dict, decoder):
    """A tar sample as the ``Clip`` the captioners take (its whole decoded video)."""
    from vtk.data.samples import decode_whole
    from vtk.types import Clip

    meta, _, video = decode_whole(sample, decoder)
    fps = float(meta.get("fps") or 0) or 8.0
    key = sample["__key__"]
    source_id, _, index = key.rpartition("_")
    extra = {"synth": meta["synth"]} if "synth" in meta else {}  # default models by source
    return Clip(source_id or key, int(index) if index.isdigit() else 0, video.numpy(), fps,
                float(meta.get("start") or 0.0), float(meta.get("end") or 0.0),
                str(meta.get("source") or ""), meta=extra)


def _row(key: str, result: dict) -> dict:
    row = {"__key__": key}
    if result.get("error"):
        row["error"] = str(result["error"])[:500]
        return row
    caps = result.get("captions") or {}
    for scale in SCALES:
        if caps.get(scale):
            row[scale] = caps[scale]
    row["info"] = {k: result[k] for k in ("caption_models", "caption_info", "caption_errors")
                   if result.get(k)}
    if result.get("caption_errors"):
        row["error"] = "; ".join(f"{k}: {v}" for k, v in result["caption_errors"].items())[:500]
    return row


def caption_shard(tar: str, name: str, captioning, settings: dict, batch: int = 8,
                  advance=lambda n: None, tally=None) -> dict:
    """Caption every sample of one tar with ``captioning`` (a ``Captioning``) and write the
    layer's sidecar for it. Returns {"samples", "errors"}."""
    from vtk.curate.score import _guarded
    from vtk.data.decoders import get_decoder
    from vtk.data.shardset import looks_truncated
    from vtk.shards.build import tally_captions
    from vtk.shards.reader import read_samples

    if looks_truncated(tar):
        raise VtkError(f"{tar}: cannot be read to the end (cut short: not whole 512-byte "
                       f"blocks closed by two zero blocks); no caption sidecar written for it")
    decoder = get_decoder("pyav")
    rows: list[dict] = []
    pending: list[tuple[int, object]] = []

    def flush():
        if not pending:
            return
        results = captioning.run([c for _, c in pending])
        for (k, _), res in zip(pending, results):
            rows[k] = _row(rows[k]["__key__"], res)
            if tally is not None:
                tally_captions(tally, res)
        advance(len(pending))
        pending.clear()

    for sample in _guarded(read_samples(tar), tar):
        rows.append({"__key__": sample["__key__"]})
        try:
            pending.append((len(rows) - 1, _clip(sample, decoder)))
        except Exception as e:  # noqa: BLE001 - one bad sample is recorded, never fatal
            rows[-1]["error"] = f"{type(e).__name__}: {e}"[:300]
            advance(1)
            continue
        if len(pending) >= batch:
            flush()
    flush()
    write_shard(tar, name, rows, settings)
    return {"samples": len(rows), "errors": sum("error" in r for r in rows)}


def layer_settings(spec, name: str) -> dict:
    """What makes a layer's captions what they are: a resumed run must match it."""
    from vtk.shards.build_set import _spec_dict

    caps = _spec_dict(spec, spec.mode)
    for k in ("device", "cache_dir", "batch_size"):  # where and how fast, not what
        caps.pop(k, None)
    if "vlm" in caps:  # the prompt by its hash; batching does not change a caption
        caps["vlm"] = spec.vlm_settings.key()
    return {"layer": name, "captions": caps}


def caption_set(folder, name: str, *, coarse_model=None, fine_model=None,
                summarizer: str = "rules", fine_fps: float | None = None, vlm=None,
                device: str = "auto", overwrite: bool = False, cache: bool = True,
                progress: bool = True, log=None) -> dict:
    """Caption the shard set in ``folder`` (a folder or URL) into the layer ``name``
    (module docstring); returns the layer's summary, also written to its ``_layer.json``."""
    from vtk import __version__
    from vtk.captions import Captioning, CaptionSpec
    from vtk.curate.score import _sum_over_ranks
    from vtk.data.shardset import resolve_shards
    from vtk.train import dist

    check_name(name)
    _pa()  # pyarrow writes the layer: a missing one is told before any clip is captioned
    folder = str(folder).rstrip("/")
    if storage.store(folder).local and not os.path.isdir(folder):
        raise VtkError(f"{folder}: shard set folder not found")
    if coarse_model is None and fine_model is None:
        raise VtkError("vtk caption: give --fine-model and/or --coarse-model (the captioners "
                       "of the layer)")
    mode = "both" if coarse_model and fine_model else "fine" if fine_model else "coarse"
    tars = resolve_shards(folder)
    d = dist.setup(device)
    if not storage.store(folder).local:  # the cache is SQLite: on this machine, keyed by pixels
        from vtk.shards.build_set import default_caption_cache

        cache_dir = default_caption_cache(folder)
    else:
        cache_dir = os.path.join(layer_dir(folder, name), CACHE)
    given = {"coarse_model": coarse_model, "fine_model": fine_model, "fine_fps": fine_fps,
             "vlm": vlm}
    spec = CaptionSpec(mode=mode, summarizer=summarizer, device=str(d.device),
                       cache_dir=cache_dir if cache else None,
                       **{k: v for k, v in given.items() if v is not None})
    from vtk.shards.build_set import check_models

    check_models(spec)  # a hub id that cannot load: one line now, before the layer's folder
    base = layer_settings(spec, name)
    mine, todo, skipped = tars[d.rank::d.world], [], 0
    for tar in mine:
        settings = {**base, "tar_bytes": storage.size(tar)}
        old = read_settings(tar, name)
        if old is not None and {k: v for k, v in old.items() if k != "vtk_version"} == settings \
                and not overwrite:
            skipped += 1
            continue
        if old is not None and not overwrite:
            from vtk.curate.score import _differs

            raise VtkError(f"{layer_path(tar, name)} was written with other settings "
                           f"({_differs(old, settings)}): pass --overwrite to caption again, "
                           f"or --as another name")
        todo.append((tar, {**settings, "vtk_version": __version__}))
    captioning = Captioning(spec)
    if captioning.cache is not None:
        from vtk.shards.build import _CountingCache

        captioning.cache = _CountingCache(captioning.cache)
    from vtk.captions.base import is_video_model

    # clips per captioning call: a video captioner's batch (each clip one request or more),
    # else the shard builder's; a kill loses at most one call's clips (the cache has the rest)
    batch = spec.vlm_settings.batch if is_video_model(fine_model) else 8
    tally: dict = {}
    from vtk.curate.score import _shard_counts
    from vtk.progress import over_shards

    counts = {} if not storage.store(folder).local else _shard_counts(Path(folder), [t for t, _ in todo])
    t0 = time.perf_counter()
    done, _ = over_shards(
        todo, lambda tar, settings, advance: caption_shard(
            tar, name, captioning, settings, batch, advance, tally),
        f"captioning as {name}", "caption", sum(counts.get(t, 0) for t, _ in todo),
        progress and d.rank == 0, log)
    seconds = time.perf_counter() - t0
    cache_counts = ((captioning.cache.hits, captioning.cache.misses)
                    if captioning.cache is not None else (0, 0))
    written, skipped, done, hits, misses = _sum_over_ranks(d, len(todo), skipped, done,
                                                           *cache_counts)
    from vtk.shards.build import captioner_figures

    summary = {"layer": name, "folder": folder, **base, "device": str(d.device),
               "world_size": d.world, "rank": d.rank, "shards": len(tars),
               "shards_captioned": written, "shards_skipped": skipped, "samples_captioned": done,
               "cache": {"hits": hits, "captioned": misses}, "seconds": round(seconds, 3),
               "captioners": captioner_figures(tally), "vtk_version": __version__}
    summary.update(summarize(folder, name, tars))
    if d.rank == 0:
        storage.write_json(_card_path(folder, name), summary)
    return summary


def _card_path(folder: str, name: str) -> str:
    return storage.join(layer_dir(folder, name), LAYER_CARD)


def summarize(folder: str, name: str, tars: list[str]) -> dict:
    """Counts over every shard's sidecar: samples, captions per scale, failures, and the
    models and prompt hashes the clips record."""
    samples = failed = 0
    per_scale = dict.fromkeys((*SCALES, "text"), 0)
    models, prompts = set(), set()
    missing = 0
    for tar in tars:
        table = read_shard(tar, name)
        if table is None:
            missing += 1
            continue
        samples += table.num_rows
        failed += sum(e is not None for e in table.column("error").to_pylist())
        for c in per_scale:
            per_scale[c] += sum(v is not None for v in table.column(c).to_pylist())
        for raw in table.column("info").to_pylist():
            info = json.loads(raw or "{}")
            models.update(v for k, v in (info.get("caption_models") or {}).items()
                          if k != "summarizer")
            prompts.update(i.get("prompt_sha") for i in (info.get("caption_info") or {})
                           .values() if i.get("prompt_sha"))
    return {"samples": samples, "captioned": per_scale, "failures": failed,
            "shards_without_sidecar": missing, "models": sorted(models),
            "prompt_sha": sorted(prompts)}
