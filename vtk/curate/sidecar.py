"""Score sidecars: one Parquet file per shard, keyed by ``__key__``, beside the tars.

Layout, for a shard ``DIR/NAME-000000.tar``::

    DIR/scores/NAME-000000.parquet               one row per sample, in tar order
    DIR/scores/_embeddings/NAME-000000.npy       float16 N x D clip embeddings, same rows
    DIR/scores/_summary.json                     what the last ``vtk score`` did

The ``_`` names are what pyarrow (and so pandas) skips when it reads a folder as a dataset:
``pd.read_parquet("DIR/scores")`` is the whole set's scores.

Why a sidecar and not the tars: the tars stay byte-for-byte what ``vtk shard`` wrote (their
``.idx`` offsets, checksums and any copy elsewhere stay valid), scoring again with another
model replaces a small file, and Parquet is read by pandas, Hugging Face ``datasets``, DuckDB
and Spark without vtk (``pd.read_parquet("DIR/scores")`` reads the whole set's scores).

Columns: ``__key__`` (string), one float64 column per score (``clip-text``,
``clip-text.coarse`` ... ``motion``; NaN when the sample has no such caption), ``width``,
``height``, ``num_frames``, ``mp4_bytes`` (int64: dedup keeps the larger copy), ``hashes``
(list of uint64: the frame hashes of ``vtk.curate.hashes``) and ``error`` (null, or why the
sample was not scored). The file's schema metadata ``vtk`` holds the settings as JSON (model,
scores, the tar's size), so a resumed ``vtk score`` knows which shards are done. A sidecar is
written under a temporary name and renamed after its embeddings: a final name means complete.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from vtk.errors import VtkError, require

SCORES_DIR = "scores"
EMB_DIR = "_embeddings"
SUMMARY = "_summary.json"
META_KEY = b"vtk"
INFO_COLUMNS = ("__key__", "width", "height", "num_frames", "mp4_bytes", "hashes", "error")


def _pa():
    require("pyarrow", extra="parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


def sidecar_path(tar_path) -> Path:
    tar = Path(tar_path)
    return tar.parent / SCORES_DIR / (tar.stem + ".parquet")


def embeddings_path(tar_path) -> Path:
    tar = Path(tar_path)
    return tar.parent / SCORES_DIR / EMB_DIR / (tar.stem + ".npy")


def score_columns(names) -> list[str]:
    """The score columns among a sidecar's column names."""
    return [c for c in names if c not in INFO_COLUMNS]


def write_sidecar(tar_path, rows: list[dict], settings: dict, embeddings=None) -> Path:
    """Write the sidecar of one shard (``rows``: one dict per sample, tar order) and its
    embeddings (N x D, or None); returns the parquet path."""
    pa, pq = _pa()
    path = sidecar_path(tar_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted({k for r in rows for k in r if k not in INFO_COLUMNS})
    cols = {"__key__": pa.array([r["__key__"] for r in rows], pa.string())}
    for name in names:
        cols[name] = pa.array([float(r.get(name, np.nan)) for r in rows], pa.float64())
    for name in ("width", "height", "num_frames", "mp4_bytes"):
        cols[name] = pa.array([int(r.get(name) or 0) for r in rows], pa.int64())
    cols["hashes"] = pa.array([[int(h) for h in r.get("hashes", ())] for r in rows],
                              pa.list_(pa.uint64()))
    cols["error"] = pa.array([r.get("error") for r in rows], pa.string())
    table = pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(settings)})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if embeddings is not None:
            emb_path = embeddings_path(tar_path)
            emb_path.parent.mkdir(parents=True, exist_ok=True)
            emb_tmp = emb_path.with_name(f".{emb_path.name}.tmp-{os.getpid()}.npy")
            np.save(emb_tmp, np.asarray(embeddings, dtype=np.float16))
            os.replace(emb_tmp, emb_path)
        pq.write_table(table, tmp)
        os.replace(tmp, path)  # last: a final name means the shard's scores are complete
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise VtkError(f"cannot write {path}: {e.strerror or e}") from None
    _cached.cache_clear()
    return path


def read_settings(tar_path) -> dict | None:
    """The settings a shard's sidecar was written with, None when there is none (or it is
    unreadable: then it counts as not done)."""
    path = sidecar_path(tar_path)
    if not path.is_file():
        return None
    _, pq = _pa()
    try:
        meta = pq.read_schema(path).metadata or {}
        got = json.loads(meta.get(META_KEY, b"{}"))
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) else None


def read_table(tar_path, columns=None):
    """The sidecar as a pyarrow Table (None when absent). VtkError when it is damaged."""
    path = sidecar_path(tar_path)
    if not path.is_file():
        return None
    _, pq = _pa()
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, ValueError) as e:  # pyarrow's errors derive from these
        raise VtkError(f"{path}: unreadable score sidecar ({e}); run vtk score again with "
                       f"--overwrite") from None


def check_table(tar_path, table, shard_keys: list[str], shard_hash: str | None = None,
                hint: str | None = None) -> None:
    """A VtkError naming the sidecar when it does not belong to its shard as it is now: a
    ``__key__`` column of texts and numeric score columns, the shard's hash it recorded (when
    both sides have one) equal to ``shard_hash``, and one row per sample of the shard, in tar
    order (``vtk.shards.integrity.check_rows``). Checked before any row is used."""
    import pyarrow as pa

    from vtk.shards.integrity import check_rows

    path = sidecar_path(tar_path)
    hint = hint or f"run: vtk score {Path(tar_path).parent} (it rewrites such a sidecar)"
    names = table.column_names
    if "__key__" not in names:
        raise VtkError(f"{path}: no __key__ column (not a vtk score sidecar); {hint}")
    kinds = {"__key__": pa.types.is_string, "hashes": pa.types.is_list,
             "error": lambda t: pa.types.is_string(t) or pa.types.is_null(t)}
    for name in ("width", "height", "num_frames", "mp4_bytes"):
        kinds[name] = pa.types.is_integer
    for name in names:
        typ = table.schema.field(name).type
        ok = kinds.get(name, lambda t: pa.types.is_floating(t) or pa.types.is_integer(t) or
                       pa.types.is_null(t))
        if not ok(typ):
            raise VtkError(f"{path}: column {name!r} holds {typ}, not "
                           f"{'numbers' if name not in kinds else 'what vtk score writes'}; "
                           f"{hint}")
    recorded = settings_of(table).get("tar_sha256")
    if shard_hash and recorded and recorded != shard_hash:  # other settings: --overwrite
        raise VtkError(f"{path}: scored on another build of {Path(tar_path).name} (its shard "
                       f"hash {str(recorded)[:12]}..., index.json's {shard_hash[:12]}...); run: "
                       f"vtk score {Path(tar_path).parent} --overwrite")
    check_rows(path, table.column("__key__").to_pylist(), shard_keys, hint)


def settings_of(table) -> dict:
    """The settings a sidecar table records (``{}`` when none can be read)."""
    try:
        got = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def read_embeddings(tar_path) -> np.ndarray | None:
    path = embeddings_path(tar_path)
    if not path.is_file():
        return None
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise VtkError(f"{path}: unreadable embeddings ({e})") from None


@lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int) -> dict:
    _, pq = _pa()
    import pyarrow as pa

    try:
        schema = pq.read_schema(path)
        names = score_columns(schema.names)
        table = pq.read_table(path, columns=["__key__", *names])
    except (OSError, ValueError, KeyError) as e:  # KeyError: no __key__ column
        raise VtkError(f"{path}: unreadable score sidecar ({e})") from None
    for name in names:
        typ = schema.field(name).type
        if not (pa.types.is_floating(typ) or pa.types.is_integer(typ)):
            raise VtkError(f"{path}: score column {name!r} holds {typ}, not numbers; run: vtk "
                           f"score {Path(path).parent.parent} (it rewrites such a sidecar)")
    keys = table.column("__key__").to_pylist()
    values = {n: table.column(n).to_numpy(zero_copy_only=False) for n in names}
    out = {}
    for i, key in enumerate(keys):
        out[key] = {n: float(v[i]) for n, v in values.items() if np.isfinite(v[i])}
    return out


def load_sidecar(tar_path) -> dict[str, dict[str, float]] | None:
    """``{__key__: {score name: value}}`` of one shard (NaN scores left out), or None when the
    shard has no sidecar. For the loader: call it once per shard and merge each sample's dict
    into ``meta["scores"]`` (``merge_scores``). pyarrow is imported only when a sidecar
    exists; the last 8 shards read are cached (keyed by the file's mtime and size), so an
    epoch over a set costs one Parquet read per shard."""
    path = sidecar_path(tar_path)
    try:
        st = path.stat()
    except OSError:
        return None
    return _cached(str(path), st.st_mtime_ns, st.st_size)


def merge_scores(meta: dict, scores: dict[str, float] | None) -> dict:
    """``meta`` with ``scores`` merged into ``meta["scores"]`` (sidecar values win over a
    manifest's of the same name); ``meta`` itself is not changed."""
    if not scores:
        return meta
    old = meta.get("scores") if isinstance(meta.get("scores"), dict) else {}
    return {**meta, "scores": {**old, **scores}}
