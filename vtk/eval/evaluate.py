"""``evaluate(run_dir, benches)``: embed every benchmark with a trained run, score, write
``RUN/eval.json``. The ablation runner calls it in-process; ``vtk eval`` is a thin CLI over it.

eval.json (docs/evaluation.md): ``{"benchmarks": {NAME: {"name", "task", "num_videos",
"num_texts", "missing", "checkpoint", "settings", "protocol", "metrics"}}, "protocols":
{LABEL: {NAME: ...}}, "units", "vtk_version"}``. ``protocol`` is the card of what decides the
number (``vtk.eval.protocol``); ``benchmarks`` holds each benchmark's latest evaluation,
``protocols`` every protocol's. Metrics are fractions (top1, top5, avg; t2v_r1 ... v2t_mnr)
and ranks (``*_mdr``, ``*_mnr``); DSL-rescored retrieval figures sit beside the raw ones under
``dsl_`` keys.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from vtk import __version__
from vtk.environment import pick_device
from vtk.errors import VtkError
from vtk.eval import zeroshot
from vtk.eval.benchmarks import (
    BenchSpec,
    Prepared,
    check,
    default_benches,
    parse_bench,
    prepare,
)
from vtk.eval.protocol import PROTOCOLS, Protocol, cleaner
from vtk.eval.protocol import card as protocol_card
from vtk.eval.protocol import resolve as resolve_protocol
from vtk.fileio import write_json
from vtk.train.runtime import threads_beside

UNITS = {"top1 top5 avg r1 r5 r10": "fraction of queries (0-1)",
         "mdr mnr": "rank, 1-based; ties counted against the ground truth"}


@torch.no_grad()
def embed_videos(model, loader, device, total: int | None = None, label: str = "") -> dict:
    """Run the video tower over an eval loader. Returns ``emb`` V x D (float32 numpy) and per
    video ``keys``, ``labels``, ``texts`` in loader order."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from vtk.progress import bar

    embs, keys, labels, texts = [], [], [], []
    with bar(TextColumn(f"embedding {label}"), BarColumn(), MofNCompleteColumn(),
             TimeRemainingColumn(), line=f"embedding {label} videos", stderr=True) as pbar:
        task = pbar.add_task(f"embedding {label}", total=total)
        for batch in loader:
            video = batch["video"].to(device, non_blocking=True)
            embs.append(model.encode_video(video).float().cpu())
            keys += batch["key"]
            labels += batch["label"]
            texts += batch["texts"]
            pbar.update(task, completed=len(keys))
    if not keys:
        raise VtkError("the benchmark shards yielded no video")
    return {"emb": torch.cat(embs).numpy(), "keys": keys, "labels": labels, "texts": texts}


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], chunk: int = 256) -> np.ndarray:
    """T texts -> T x D float32 numpy (L2-normalised by the model)."""
    out = [model.encode_text(list(texts[i : i + chunk])).float().cpu()
           for i in range(0, len(texts), chunk)]
    return torch.cat(out).numpy()


def score_classification(model, videos: dict, classes: list[str], templates, mode: str,
                         clean=None):
    """-> (metrics, sims classes x videos, ground truth {"video_labels": [...]}, number of
    prompts: classes x templates). ``clean``: applied to every filled-in prompt."""
    index = {c: i for i, c in enumerate(classes)}
    bad = sorted({str(lab) for lab in videos["labels"] if lab not in index})
    if bad:
        raise VtkError(f"labels not among the benchmark's classes: {', '.join(bad[:5])}")
    labels = [index[lab] for lab in videos["labels"]]
    prompts = zeroshot.class_prompts(classes, templates)
    if clean:
        prompts = [clean(t) for t in prompts]
    prompt_emb = embed_texts(model, prompts)
    metrics, sims = zeroshot.zeroshot_classification(
        videos["emb"], prompt_emb, labels, len(templates), mode)
    truth = {"video_labels": labels, "classes": classes, "templates": list(templates)}
    return metrics, sims, truth, len(prompts)


def score_retrieval(model, videos: dict, paragraph: bool, dsl: bool, one_caption: bool = False,
                    clean=None):
    """-> (metrics, sims texts x videos, ground truth {"text_to_video": [...]}, number of
    texts). ``one_caption``: each video's first caption is its only query; ``clean``: applied
    to every query."""
    per_video = [refs[:1] for refs in videos["texts"]] if one_caption else videos["texts"]
    texts, owner = zeroshot.retrieval_texts(per_video, paragraphs=paragraph)
    if clean:
        texts = [clean(t) for t in texts]
    text_emb = embed_texts(model, texts)
    metrics, sims = zeroshot.zeroshot_retrieval(videos["emb"], text_emb, owner, dsl=dsl)
    return metrics, sims, {"text_to_video": owner.tolist(), "texts": texts}, len(texts)


def evaluate_bench(model, prepared: Prepared, frames: int, size: int, device, *,
                   protocol: Protocol | None = None, batch_size: int = 32, backend: str = "auto",
                   workers: int = 1, normalize: str = "clip"):
    """Embed and score one prepared benchmark under ``protocol`` (default: plain) -> (entry
    for eval.json, without its card, sims, ground truth)."""
    from vtk.data.loader import build_loader

    protocol = protocol or PROTOCOLS["plain"]
    # rank 0 of 1 even under torchrun: every process scores the whole benchmark
    card = prepared.card
    loader = build_loader(str(prepared.shards), backend=backend, frames=frames, size=size,
                          train=False, batch_size=batch_size, workers=workers, captions="txt",
                          normalize=normalize, device=str(device), rank=0, world_size=1,
                          crop=protocol.crop)
    videos = embed_videos(model, loader, device, prepared.info.get("num_videos"),
                          prepared.spec.name)
    templates = zeroshot.resolve_templates(protocol.templates)
    clean = cleaner(protocol)
    settings = {"dsl": protocol.dsl, "frames": frames, "size": size, "crop": protocol.crop,
                "clean": protocol.clean, "source": prepared.spec.source,
                "shards": str(prepared.shards)}
    if card["task"] == "classification":
        metrics, sims, truth, num_texts = score_classification(
            model, videos, card["classes"], templates, protocol.template_average, clean)
        settings.update(templates=list(templates), template_average=protocol.template_average)
    else:
        one = prepared.spec.name.removeprefix("synth-") in protocol.one_caption
        metrics, sims, truth, num_texts = score_retrieval(
            model, videos, card["paragraph"], protocol.dsl, one, clean)
        settings.update(paragraph=card["paragraph"], dsl_temperature=1.0, one_caption=one)
    truth["video_keys"] = videos["keys"]
    entry = {"name": prepared.spec.name, "task": card["task"], "num_videos": len(videos["keys"]),
             "num_texts": num_texts, "missing": int(card.get("missing", 0)),
             "synthetic": prepared.spec.synthetic, "settings": settings, "metrics": metrics}
    if card.get("missing_ids"):
        entry["missing_ids"] = card["missing_ids"]
    if card["task"] == "classification":
        entry["num_classes"] = len(card["classes"])
    return entry, sims, truth


def save_sims(out_dir: str | Path, name: str, sims: np.ndarray, truth: dict, task: str):
    """``NAME.npy`` (texts x videos, or class texts x videos) and ``NAME.json`` (ground truth)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{name}.npy", np.asarray(sims, dtype=np.float32))
    rows = "class (templates averaged)" if task == "classification" else "text"
    (out / f"{name}.json").write_text(json.dumps(
        {"task": task, "rows": rows, "columns": "video", **truth}, indent=1))


def checkpoint_info(run_dir: Path, sha256: bool = False) -> dict:
    from vtk.fileio import file_sha256

    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.exists():
        return {"path": str(ckpt), "exists": False}
    st = ckpt.stat()
    out = {"path": str(ckpt), "bytes": st.st_size,
           "modified": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(st.st_mtime))}
    if sha256:
        out["sha256"] = file_sha256(ckpt)
    return out


def apply_wise_ft(model, run_dir: Path, config, protocol: Protocol, init: str | None) -> dict | None:
    """Interpolate ``model`` with the weights it was trained from (``init``, else its
    config.json's ``--init``) at the protocol's WiSE-FT share; what was done, or None."""
    from vtk.model import init_state, wiseft

    alpha = protocol.wise_ft
    if alpha is None:
        return None
    cfg = config if isinstance(config, dict) else vars(config) if config is not None else {}
    init = init or cfg.get("init")
    if alpha == 1.0:  # the trained model itself
        return {"alpha": 1.0, "init": init, "interpolated": 0, "kept": []}
    if not init:
        raise VtkError(f"--wise-ft {alpha:g} interpolates with the weights {run_dir} was trained "
                       "from, and its config.json names no --init: pass --init (a CLIP folder "
                       "or viclip:PATH), or --wise-ft 1 (the trained weights alone)")
    info = wiseft.apply(model, init_state(init, model), alpha)
    # what stayed trained, by module: the temporal embedding, the temperature, a text tower
    # the init has no counterpart of
    kept = sorted({".".join(k.split(".")[:2]) for k in info["kept"]})
    return {"alpha": alpha, "init": init, "interpolated": info["interpolated"], "kept": kept}


def _frames_size(model, config) -> tuple[int, int, str]:
    cfg = config if isinstance(config, dict) else vars(config) if config is not None else {}
    mcfg = getattr(model, "cfg", None)
    # "model" is the model's name in a run's config.json; a dict there holds its settings
    sub = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    frames = getattr(mcfg, "frames", None) or cfg.get("frames") or sub.get("frames")
    size = getattr(mcfg, "size", None) or cfg.get("size") or sub.get("size")
    if not frames or not size:
        raise VtkError("the run's config has no frames/size: cannot build the eval loader")
    return int(frames), int(size), cfg.get("normalize", "clip")


def evaluate(run_dir: str | Path, benches: Iterable[str | BenchSpec] | None = None, *,
             write: bool = True, model=None, config=None, log=None, **options) -> dict:
    """Evaluate the run in ``run_dir`` on ``benches`` (``--bench`` strings or BenchSpecs;
    None: ``vtk.eval.benchmarks.default_benches``). ``run_dir`` may be ``viclip:PATH``, a released ViCLIP
    checkpoint: it is converted into a vtk run folder beside it first
    (``vtk.model.released.convert``).

    ``options``: `vtk eval`'s options, the fields of ``vtk.eval.config.EvalConfig``.
    ``protocol`` (plain | internvid, ``vtk.eval.protocol``) sets every setting; ``dsl``,
    ``templates``, ``template_average``, ``wise_ft`` (False: none), ``crop``, ``one_caption``
    (benchmark names) and ``clean`` change one when not None. ``init``: the weights WiSE-FT
    interpolates with (default: the run's ``--init``).

    Returns the eval.json dict; with ``write`` merges it into ``RUN/eval.json`` (benchmarks
    evaluated earlier and not now are kept). ``model``/``config`` skip loading the run.
    ``log``: a callable taking one line of text (progress for long steps).
    """
    from vtk.eval.config import EvalConfig

    o = EvalConfig.from_options({**options, **({} if benches is None else {"benches": benches})})
    from vtk.model import released

    proto = resolve_protocol(o.protocol, dsl=o.dsl, templates=o.templates,
                             template_average=o.template_average, wise_ft=o.wise_ft,
                             crop=o.crop, one_caption=o.one_caption, clean=o.clean)
    if released.is_released(str(run_dir)):
        run_dir = released.convert(str(run_dir), log=log)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VtkError(f"{run_dir}: run folder not found")
    benches = list(o.benches) if o.benches is not None else default_benches(run_dir)
    specs = [b for b in benches if isinstance(b, BenchSpec)]
    names = [b for b in benches if not isinstance(b, BenchSpec)]
    specs += parse_bench(names) if names or not specs else []
    for spec in specs:
        check(spec)
    device = pick_device(o.device)
    if model is None:
        from vtk.train import load_run

        model, config = load_run(run_dir, device)
    elif proto.wise_ft is not None:
        model = copy.deepcopy(model)  # the caller's model keeps its weights
    model.eval()
    frames, size, normalize = _frames_size(model, config)
    wise = apply_wise_ft(model, run_dir, config, proto, o.init)
    ckpt = checkpoint_info(run_dir, sha256=True)
    cfg = config if isinstance(config, dict) else vars(config) if config is not None else {}
    mcfg = getattr(model, "cfg", None)
    model_card = {"name": getattr(mcfg, "model", cfg.get("model")),
                  "text": getattr(mcfg, "text", cfg.get("text")),
                  "init": getattr(mcfg, "init", cfg.get("init")),
                  "checkpoint": ckpt["path"], "checkpoint_sha256": ckpt.get("sha256")}
    max_tokens = getattr(getattr(model, "text", None), "max_len", None)
    if max_tokens is None:
        tok = getattr(getattr(model, "text", None), "tokenizer", None)
        max_tokens = getattr(tok, "max_len", None)
    # on a CPU the model's forward gets the cores the loader workers leave: on 2 shared cores
    # its 2 threads beside a worker embedded 4-7x slower than 1 thread
    with threads_beside(o.workers if device.type == "cpu" else 0):
        results = {}
        for spec in specs:
            if log:
                log(f"{spec.name}: preparing shards")
            # synthetic clips are stored at their native size; real videos at the model's input
            prepared = prepare(spec, size=None if spec.synthetic else max(size, 32),
                               root=Path(o.cache) if o.cache else None, workers=o.workers,
                               progress=log is not None, log=log)
            if log:
                log(f"{spec.name}: evaluating {prepared.info.get('num_videos', '?')} videos")
            entry, sims, truth = evaluate_bench(
                model, prepared, frames, size, device, protocol=proto, batch_size=o.batch_size,
                backend=o.backend, workers=o.workers, normalize=normalize)
            entry["checkpoint"] = ckpt
            entry["protocol"] = protocol_card(
                proto, entry, prepared.card, prepared.info, frames=frames, size=size,
                normalize=normalize, max_tokens=max_tokens, model=model_card,
                seed=cfg.get("seed"), wise=wise)
            results[spec.name] = entry
            if o.save_sims:
                save_sims(o.save_sims, spec.name, sims, truth, entry["task"])
    out = {"benchmarks": results, "protocols": {proto.label: results}, "units": UNITS,
           "vtk_version": __version__}
    if write:
        path = run_dir / "eval.json"
        if path.exists():
            try:
                old = json.loads(path.read_text())
                out["benchmarks"] = {**old.get("benchmarks", {}), **results}
                protocols = dict(old.get("protocols") or {})
                protocols[proto.label] = {**protocols.get(proto.label, {}), **results}
                out["protocols"] = protocols
            except (ValueError, AttributeError, TypeError):
                pass
        write_json(path, out)
    return out
