"""The benchmark registry: names -> eval shard sets, built once into a cache.

``--bench`` values:
- ``synth``: the eight synthetic analogs; ``synth-k400`` (or ``synth:k400?n=60``) one of them.
  Rendered from the synthetic world's own benchmark seeds (disjoint from every training corpus).
- a shard set that already is a benchmark (its index.json has a ``benchmark`` block, as
  ``vtk shard synth:k400?n=60 --out ...`` writes): a URL (``s3://bucket/bench/k400``, any
  fsspec URL: ``vtk.storage``) or a local folder, evaluated as it is, nothing cached.
- ``NAME=PATH[,VIDEOS]`` with NAME in k400 k600 k700 msrvtt lsmdc didemo msvd anet: a local copy
  in its usual format (``vtk.eval.formats``); PATH is the dataset folder or the annotation file,
  VIDEOS the video folder when it is not under PATH.

Every benchmark becomes a WebDataset shard set (whole clips, no captions; ``label`` / ``texts``
in each sample's json) under ``$VTK_CACHE/bench/<name>-<settings hash>/`` (default cache
``~/.cache/vtk``), written by the same shard writer as training data. ``bench.json`` there
records the benchmark card, the settings and the videos that were missing or failed to decode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vtk.errors import VtkError
from vtk.eval import formats
from vtk.sources import synth

SYNTH = synth.BENCHMARKS  # synth-k400 ... synth-anet
REAL = tuple(formats.REAL)  # k400 ... anet
CACHE_FORMAT = 1  # bump when the shard layout of cached benchmarks changes


@dataclass(frozen=True)
class BenchSpec:
    name: str  # synth-k400 | k400 | ...
    source: str  # synth:k400?n=.. for synthetic, the annotation path or folder for real ones
    videos: str | None = None
    shard_set: dict | None = field(default=None, hash=False, compare=False)  # its index.json

    @property
    def synthetic(self) -> bool:
        if self.shard_set is not None:
            return bool(self.shard_set["benchmark"].get("synthetic"))
        return self.source.startswith("synth:")


def shard_set_spec(value: str) -> BenchSpec | None:
    """A ``--bench`` value naming a built benchmark shard set (URL or folder), else None."""
    from vtk import storage

    folder = value.rstrip("/")
    local = storage.store(folder).local
    if local and not (Path(folder).expanduser() / "index.json").is_file():
        return None
    from vtk.shards.validate import load_card

    try:
        card = load_card(str(Path(folder).expanduser()) if local else folder)
    except FileNotFoundError:
        raise VtkError(f"--bench {value}: no index.json there (not a shard set, or its build "
                       f"never finished)") from None
    except ValueError as e:
        raise VtkError(f"--bench {value}: index.json is not JSON ({e})") from None
    bench = card.get("benchmark") if isinstance(card, dict) else None
    if not isinstance(bench, dict) or bench.get("task") not in ("classification", "retrieval"):
        raise VtkError(f"--bench {value}: a shard set without a benchmark card (build one "
                       f"with vtk shard synth:k400 ..., or convert with NAME=PATH)")
    return BenchSpec(str(bench.get("name") or storage.basename(folder)), folder,
                     shard_set=card)


def parse_bench(values: Iterable[str]) -> list[BenchSpec]:
    """``--bench`` values -> specs (``synth`` expands to all eight; duplicates dropped)."""
    out: dict[str, BenchSpec] = {}
    for value in values:
        value = value.strip()
        if value == "synth":
            for name in SYNTH:
                out[name] = BenchSpec(name, "synth:" + name.removeprefix("synth-"))
            continue
        if value.startswith(("synth-", "synth:")):
            body = value.removeprefix("synth:").removeprefix("synth-")
            preset = synth.get_preset(body.partition("?")[0])  # VtkError if unknown
            if preset.task == "train":
                raise VtkError(f"{value}: synth:train is a training corpus, not a benchmark")
            name = f"synth-{preset.name}"
            out[name] = BenchSpec(name, "synth:" + body)
            continue
        prebuilt = shard_set_spec(value)
        if prebuilt is not None:
            out[prebuilt.name] = prebuilt
            continue
        name, eq, path = value.partition("=")
        if not eq or not path:
            raise VtkError(f"--bench {value}: give synth, synth-NAME or NAME=PATH "
                           f"(NAME: {', '.join(REAL)})")
        if name not in REAL:
            raise VtkError(f"--bench {value}: unknown benchmark {name!r} (known: synth, "
                           f"{', '.join(SYNTH)}, {', '.join(REAL)})")
        path, _, videos = path.partition(",")
        out[name] = BenchSpec(name, path, videos or None)
    if not out:
        raise VtkError("no benchmark given: use --bench synth or --bench NAME=PATH")
    return list(out.values())


def trained_on_synth(data) -> bool:
    """Whether a run's ``data`` (config.json's) is the synthetic world's: each set's
    index.json names only ``synth:`` sources, or (a set without one) its first clip came
    from the synthetic world. False when a set cannot be read."""
    from vtk.data.samples import first_members
    from vtk.fileio import read_json
    from vtk.train.config import data_sets

    if not data:
        return False
    for one in data_sets(data):
        card = read_json(Path(one).expanduser() / "index.json") if "://" not in one else None
        if isinstance(card, dict) and isinstance(card.get("sources"), list):
            if not all(str(s).startswith("synth:") for s in card["sources"]):
                return False
            continue
        first = first_members(one)
        if first is None or not ("synth" in first[0] or
                                 str(first[0].get("source", "")).startswith("synth")):
            return False
    return True


def default_benches(run_dir=None, data=None) -> list[str]:
    """``--bench``'s default for the run in ``run_dir`` (or runs to train on ``data``): the
    eight synthetic benchmarks for the synthetic world. For anything else a VtkError line
    saying how to name the benchmarks: the synthetic ones say nothing about a model of real
    video, and their first build on a machine takes minutes."""
    from vtk.fileio import read_json

    if run_dir is not None:
        config = read_json(Path(run_dir) / "config.json")
        data = config.get("data") if isinstance(config, dict) else None
    if trained_on_synth(data):
        return ["synth"]
    sets = data if isinstance(data, str) else ", ".join(map(str, data or []))
    what = (f"{run_dir} was trained on {sets}, not on the synthetic world"
            if run_dir is not None and data else
            f"{run_dir} has no training data in its config.json (a converted checkpoint)"
            if run_dir is not None else f"{sets} is not the synthetic world")
    raise VtkError(f"{what}: name the benchmarks, e.g. "
                   f"--bench k400=/data/kinetics400/test.csv --bench msrvtt=/data/msrvtt "
                   f"(NAME=PATH[,VIDEOS], NAME one of {', '.join(REAL)}; docs/evaluation.md), "
                   f"or --bench synth for the synthetic benchmarks anyway")


def check(spec: BenchSpec) -> None:
    """Fail fast (before a model is loaded) when a real benchmark's files are not there."""
    if spec.synthetic or spec.shard_set is not None:
        return
    if not Path(spec.source).expanduser().exists():
        raise VtkError(f"{spec.source}: {spec.name} annotation file or folder not found")
    if spec.videos and not Path(spec.videos).expanduser().is_dir():
        raise VtkError(f"{spec.videos}: {spec.name} video folder not found")
    if Path(spec.source).expanduser().is_dir():
        formats.find_annotation(formats.REAL[spec.name], Path(spec.source).expanduser())


def cache_root() -> Path:
    return Path(os.environ.get("VTK_CACHE") or Path.home() / ".cache" / "vtk").expanduser()


def _fingerprint(path: str | None) -> list:
    """Path, size and mtime of an annotation file (its folder: the path alone)."""
    if not path:
        return []
    p = Path(path).expanduser().resolve()
    st = p.stat() if p.exists() else None
    return [str(p), st.st_size if st and p.is_file() else None,
            st.st_mtime_ns if st and p.is_file() else None]


def settings_hash(spec: BenchSpec, settings: dict) -> str:
    key = {"format": CACHE_FORMAT, "source": spec.source if spec.synthetic else
           _fingerprint(spec.source), "videos": _fingerprint(spec.videos), **settings}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class Prepared:
    spec: BenchSpec
    shards: Path | str  # the shard set folder (a str for a URL: Path would mangle '//')
    info: dict  # bench.json: card, settings, missing

    @property
    def card(self) -> dict:
        return self.info["benchmark"]


def prepare(spec: BenchSpec, size: int | None = None, fps: float = 8.0, codec: str = "h264",
            root: Path | None = None, workers: int = 1, progress: bool = False,
            log=None) -> Prepared:
    """The cached eval shard set of ``spec``, built on first use.

    ``size``: short side of the stored clips (None: native for synthetic clips, 224 for
    files; the loader resizes to the model's input);
    ``fps``: frame rate of the stored clips. Building goes to a temporary folder that is
    renamed when complete, so a killed build is never mistaken for a finished one.
    ``progress``: a bar on a terminal, a line every VTK_PROGRESS_EVERY seconds elsewhere;
    ``log(line)``: told when a build starts.
    """
    if spec.shard_set is not None:  # built already, read where it is
        card = spec.shard_set
        return Prepared(spec, spec.source, {"benchmark": card["benchmark"], "spec": {
            "name": spec.name, "source": spec.source}, "settings": card.get("clips", {}),
            "num_videos": card.get("num_samples")})
    settings = {"size": size, "fps": fps, "codec": codec}
    out = (root or cache_root()) / "bench" / f"{spec.name}-{settings_hash(spec, settings)}"
    info_path = out / "bench.json"
    if info_path.exists():
        return Prepared(spec, out, json.loads(info_path.read_text()))
    if spec.synthetic:
        items = list(synth.synth_items(spec.source))
        card = synth.benchmark_card(spec.source)
        card.update(missing=0, missing_ids=[], num_annotated=len(items))
    else:
        data = formats.load_real(spec.name, spec.source, spec.videos)
        card = data.card()
        items = data.items
        if not items:
            raise VtkError(f"{data.videos}: none of the {len(data.missing)} {spec.name} videos "
                           f"named in {data.annotation} is there")
    if log:
        log(f"{spec.name}: building its shards once for this machine ({len(items)} videos "
            f"into {out}; later evaluations reuse them)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        failed = write_eval_shards(items, tmp, spec.name, card, settings, workers, progress)
        if failed:  # videos that exist but could not be decoded count as missing
            card["missing"] += len(failed)
            card["missing_ids"] = (card["missing_ids"] + failed)[:50]
            card["failed"] = len(failed)
        info = {"benchmark": card, "spec": spec.__dict__, "settings": settings,
                "num_videos": len(items) - len(failed)}
        (tmp / "bench.json").write_text(json.dumps(info, indent=1))
        try:
            tmp.rename(out)
        except OSError:  # a concurrent build finished first: keep it if it is complete
            shutil.rmtree(tmp)
            if not info_path.exists():
                raise VtkError(f"{out}: an incomplete benchmark cache is in the way; "
                               f"delete it and run again") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Prepared(spec, out, json.loads(info_path.read_text()))


def write_eval_shards(items: Sequence, out: Path, name: str, card: dict, settings: dict,
                      workers: int = 1, progress: bool = False) -> list[str]:
    """Write benchmark items as a shard set (one whole clip per video, no captions) with the
    shard writer; returns the ids of videos that could not be decoded."""
    from vtk.clips import ClipConfig
    from vtk.shards.build import run_sources
    from vtk.shards.writer import ShardWriter

    cfg = ClipConfig(mode="whole", size=settings["size"], fps=settings["fps"], min_clip=0.0)
    writer = ShardWriter(str(out), name=name, samples_per_shard=1000)
    video_ids = {it.id: it.meta.get("video_id", it.id) for it in items}
    failed: list[str] = []
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from vtk.progress import bar

    with bar(TextColumn(f"building {name}"), BarColumn(), MofNCompleteColumn(),
             TimeRemainingColumn(), line=f"building {name}: videos", stderr=True,
             disable=not progress) as pbar:
        task = pbar.add_task(name, total=len(items))
        done = [0]

        def on_result(result, totals):
            if result.failures and not result.samples:
                failed.append(video_ids.get(result.source_id, result.source_id))
            done[0] += 1
            pbar.update(task, completed=done[0])

        run_sources(items, writer, cfg, settings["codec"], None, workers, on_result)
    writer.close({"benchmark": card, "command": "vtk eval (benchmark cache)",
                  "clips": {"mode": "whole", "size": settings["size"], "fps": settings["fps"],
                            "codec": settings["codec"]}, "captions": {"mode": "none"}})
    return failed
