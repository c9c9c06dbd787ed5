"""The training loop: it only orders the steps. Model, loss, data, checkpoints, metrics and
parallelism live in their own modules.

    batch -> encode video (masked) and text -> symmetric InfoNCE -> AdamW step -> log
         every N steps and on SIGINT/SIGTERM -> checkpoint (resumable exactly)

Two stages: ``steps`` masked steps (warmup + cosine), then ``unmasked_steps`` with every token
at ``unmasked_lr_scale`` x the learning rate (ViCLIP's unmasked final stage).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from vtk.data.epochs import Batches
from vtk.errors import VtkError
from vtk.fileio import remove_stale_temps, write_json, write_text_atomic
from vtk.locks import lock_folder
from vtk.model import build_model
from vtk.model.loss import contrastive_loss
from vtk.model.viclip import ModelConfig
from vtk.shards.integrity import check_counts
from vtk.train import checkpoint, dist, limits, meters
from vtk.train.checkpoint import TrainState

# Per-size optimisation defaults: the CPU prototype for tiny, ViCLIP for b16 / l14
# (docs/background.md).
DEFAULTS = {
    "tiny": dict(lr=1e-3, weight_decay=0.05, batch_size=64),
    "b16": dict(lr=2e-4, weight_decay=0.2, batch_size=32),
    "l14": dict(lr=4e-4, weight_decay=0.2, batch_size=32),
}


@dataclass
class TrainConfig(ModelConfig):
    """Plain data: everything a run needs; written to RUN/config.json."""

    data: str | list | None = None  # shard set(s): folder, list of tars or brace pattern
    # sampling for large corpora (docs/training.md, "What an epoch is")
    resampled: bool = False  # draw shards with replacement; an epoch: train_num_samples
    train_num_samples: int | None = None  # samples per epoch (all ranks), resampled
    data_weights: list | None = None  # one weight per shard set of ``data`` (resampled)
    sampling: str = "uniform"  # uniform | div (InternVid-10M-DIV: 1 / clips of the source)
    out: str | None = None  # run directory
    mask: float = 0.0  # share of video tokens dropped in the masked stage
    captions: str = "fine"  # coarse | fine | both | mixed | txt
    flip: str = "swap"  # swap (mirror + swap left/right in the caption) | plain | off
    steps: int = 300  # optimiser steps of the masked stage
    unmasked_steps: int = 0  # then this many steps with every token
    unmasked_lr_scale: float = 0.1  # ... at this share of the learning rate
    batch_size: int | None = None  # per rank and micro-step
    accum: int = 1  # gradient accumulation (micro-batches per optimiser step)
    lr: float | None = None
    warmup: float = 0.08  # < 1: share of ``steps``; >= 1: a number of steps
    min_lr_ratio: float = 0.01  # cosine floor, as ViCLIP's min_lr_multi
    weight_decay: float | None = None
    betas: tuple = (0.9, 0.98)
    grad_clip: float = 1.0  # the global gradient norm is clipped to this; 0 = off
    amp: str = "auto"  # auto (bf16 on GPUs that have it, else fp16) | bf16 | fp16 | off
    backend: str = "auto"
    normalize: str = "clip"  # pixel normalisation (eval reads it from config.json)
    cache: str | None = None  # decoded-frame cache folder (small corpora: decode once)
    max_sample_bytes: int = 256 * 2**20  # larger samples are skipped unread (vtk.shards.reader)
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 1
    resume: bool = False
    overwrite: bool = False  # replace a run already in ``out``
    stop_after: int | None = None  # stop (checkpointed, resumable) at this step: preemption
    quiet: bool = False

    @property
    def total_steps(self) -> int:
        return self.steps + self.unmasked_steps

    def warmup_steps(self) -> int:
        return int(round(self.warmup * self.steps)) if self.warmup < 1 else int(self.warmup)

    def fill_defaults(self) -> TrainConfig:
        from vtk.model import released

        if released.is_released(self.init):  # the checkpoint's size and pixel statistics
            self.model = released.detect(released.read(self.init), self.init).size
            self.normalize = released.NORMALIZE
        for k, v in DEFAULTS.get(self.model, DEFAULTS["b16"]).items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        self.betas = tuple(self.betas)
        return self


# Fields an older vtk wrote to config.json that are gone: dropped when a saved run is read,
# refused anywhere else (``out``: a run folder may be moved; it comes from --out).
LEGACY_KEYS = ("out",)

# Options that may change when a run is resumed; everything else comes from its config.json.
RESUMABLE = ("overwrite", "steps", "unmasked_steps", "checkpoint_every", "log_every", "workers", "device",
             "stop_after", "quiet", "resume", "data", "cache", "backend", "grad_clip")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimiser step ``step`` (0-based)."""
    def cosine(p):
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))

    if step < cfg.steps:
        w = cfg.warmup_steps()
        if step < w:
            return (step + 1) / w
        return cosine((step - w) / max(1, cfg.steps - w))
    return cfg.unmasked_lr_scale * cosine((step - cfg.steps) / max(1, cfg.unmasked_steps))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on biases, norms, embeddings or the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def mask_generator(cfg: TrainConfig, rank: int, step: int, micro: int, device) -> torch.Generator:
    """Token masking randomness as a pure function of (seed, rank, step, micro-batch): nothing
    to save for an exact resume, and a different mask on every rank and step."""
    seed = int(np.random.SeedSequence([cfg.seed, rank, step, micro]).generate_state(1)[0])
    return torch.Generator(device).manual_seed(seed)


def pick_threads(cores: int, workers: int, omp_num_threads: str | None,
                 procs: int = 1) -> int | None:
    """torch's intra-op threads for a training process: the cores that its loader workers
    leave free (each worker runs one thread: torch's DataLoader sets it), with the node's cores
    shared by its ``procs`` training processes. ``None`` where OMP_NUM_THREADS is set: torch
    already follows the user's choice (torchrun sets 1 for several processes a node). On 2
    cores, 2 workers beside torch's default 2 threads trained 2-3x slower than 1 thread."""
    if omp_num_threads:
        return None
    return max(1, cores // max(1, procs) - workers)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: taskset, cgroup cpusets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class StopRequest:
    """SIGINT / SIGTERM ask the loop to checkpoint and stop after the current step."""

    def __init__(self):
        self.requested, self._old = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class RunDir:
    """RUN/config.json, metrics.jsonl (one line per logged step), summary.json, checkpoint.pt."""

    def __init__(self, path, main: bool):
        self.path, self.main = Path(path), main
        if main:
            self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoint = self.path / "checkpoint.pt"

    def write_json(self, name: str, obj: dict):
        if self.main:
            write_json(self.path / name, obj, indent=2)

    def truncate_metrics(self, step: int):
        """Drop lines logged after the checkpoint a run resumes from (and a last line a kill
        cut short)."""
        f = self.path / "metrics.jsonl"
        if self.main and f.exists():
            keep = []
            for ln in f.read_text().splitlines():
                try:
                    if json.loads(ln)["step"] <= step:
                        keep.append(ln)
                except (ValueError, KeyError, TypeError):
                    continue
            write_text_atomic(f, "".join(ln + "\n" for ln in keep))

    def log(self, row: dict):
        if self.main:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")


def _autocast(device: torch.device, amp: str):
    """(a function giving a fresh autocast context, a GradScaler for fp16 or None)."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext, None
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def _progress(cfg: TrainConfig, main: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from vtk.progress import bar

    # rate: the running average (clips so far / training time so far), as in summary.json
    return bar(
        TextColumn("[bold]train[/] mask {task.fields[mask]:.2f}"), BarColumn(),
        MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[rate]:.1f} clips/s"), TimeElapsedColumn(), TimeRemainingColumn(),
        line="train mask {mask:.2f} loss {loss:.3f} | {rate:.1f} clips/s (average)",
        disable=cfg.quiet or not main,
    )


def prepare_config(config) -> TrainConfig:
    """The config a run trains with: defaults filled in, or the saved one when resuming (then
    only the RESUMABLE options given here replace the saved ones)."""
    given = config if isinstance(config, dict) else asdict(TrainConfig.from_dict(config))
    cfg = TrainConfig.from_dict(given)
    if cfg.out is None:
        raise VtkError("no run directory: pass --out RUN")
    saved = Path(cfg.out) / "config.json"
    if cfg.resume and (Path(cfg.out) / "checkpoint.pt").exists():
        old = TrainConfig.from_dict(checkpoint.read_config(saved), legacy=LEGACY_KEYS)
        given = {**given, "data": resumed_data(old, given)}
        for k in RESUMABLE:
            if given.get(k) is not None:
                setattr(old, k, given[k])
        old.resume, old.out = True, cfg.out  # the folder may have moved: it is where it is now
        limits.check_values(old.fill_defaults())
        return old
    if (Path(cfg.out) / "checkpoint.pt").exists() and not cfg.overwrite:
        raise VtkError(f"{cfg.out} already holds a run: pass --resume to continue it, "
                       "--overwrite to replace it, or another --out")
    if cfg.data is None:
        raise VtkError("no training data: pass a shard set folder")
    limits.check_values(cfg.fill_defaults())
    return cfg


# What decides the mixture a run draws from, with its data: a resume that names its data
# states these too (given, or their defaults), and they must be the saved ones.
SAMPLING = ("resampled", "train_num_samples", "data_weights", "sampling")


def resumed_data(old: TrainConfig, given: dict):
    """The data a resume trains on: None when it names none (config.json's is used). A resume
    that names its data gives its shard sets in any order (matched to the saved ones by
    path, so each keeps its weight and the data position its meaning) and the same sampling
    options; one that changes them is a VtkError naming the option."""
    from vtk import storage

    data = given.get("data")
    if data is None:
        return None
    new = {k: given.get(k, TrainConfig.__dataclass_fields__[k].default) for k in SAMPLING}
    sets, saved = _sets(data), _sets(old.data)

    def where(p):
        return p if storage.is_url(p) else os.path.abspath(p)

    mine, theirs = [where(p) for p in sets], [where(p) for p in saved]
    if len(sets) > 1 and mine != theirs and sorted(mine) == sorted(theirs):
        order = [mine.index(p) for p in theirs]  # the saved order: weights follow their sets
        data = [sets[i] for i in order]
        w = new["data_weights"]
        if isinstance(w, (list, tuple)) and len(w) == len(order):
            new["data_weights"] = [w[i] for i in order]
    for k in SAMPLING:
        was, now = getattr(old, k), new[k]
        if _plain(was) != _plain(now):
            flag = "--" + k.replace("_", "-")
            note = (" (weights in the saved order of the shard sets, matched by path)"
                    if k == "data_weights" and len(sets) > 1 else "")
            raise VtkError(f"{given.get('out')}: trained with {_option(flag, was)}, resumed with "
                           f"{_option(flag, now)}{note}; a resume "
                           f"keeps its run's sampling: give the same options, or resume with "
                           f"--out and --resume alone, or train anew in another --out")
    return data


def _plain(value):
    """A sampling option as compared on resume (weights 1 and 1.0 are the same)."""
    if isinstance(value, (list, tuple)):
        return [float(v) if isinstance(v, (int, float)) else v for v in value]
    return value


def _sets(data) -> list[str]:
    return [str(x) for x in data] if isinstance(data, (list, tuple)) else [str(data)]


def _option(flag: str, value) -> str:
    if isinstance(value, bool):
        return flag if value else f"no {flag}"
    if value is None:
        return f"no {flag}"
    if isinstance(value, (list, tuple)):
        value = ",".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in value)
    return f"{flag} {value}"


def saved_config(cfg: TrainConfig) -> dict:
    """config.json: the run's settings, without ``out``: a run folder may be moved, and where
    it is then comes from ``--out``, not from what the folder says."""
    return {k: v for k, v in asdict(cfg).items() if k != "out"}


def restore(ckpt: dict, path, model, opt, sched, scaler, world: int):
    """Load a checkpoint's states into the run -> its TrainState; a VtkError when it does not
    fit this run."""
    try:
        if ckpt["world"] != world:
            raise VtkError(f"{path}: saved by {ckpt['world']} processes, resumed by {world}; "
                           "the data position would not match")
        model.load_persistent_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        checkpoint.set_rng_state(ckpt["rng"])
        return TrainState.from_checkpoint(ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise VtkError(f"{path}: does not fit this run's config.json ({type(e).__name__}: "
                       f"{first[:200]})") from None


def data_shards(data, weights) -> list[str]:
    """Every tar of ``data``: one shard set, or a list of sets (each a folder or pattern; a
    list of tar paths when no weights are given and every entry is a tar)."""
    from vtk.data.shardset import resolve_shards

    if isinstance(data, (list, tuple)) and (weights is not None or len(data) > 1 and not all(
            str(x).endswith(".tar") for x in data)):
        return [p for one in data for p in resolve_shards(one)]
    return resolve_shards(data[0] if isinstance(data, (list, tuple)) and len(data) == 1
                          else data)


def data_position(data: dict, rank: int) -> dict:
    """This rank's loader position in a checkpoint's ``data``: ``{"ranks": [one per rank]}``,
    or an older vtk's ``{"epoch", "offset"}``, shared by all ranks."""
    if "ranks" not in data:
        return data
    ranks = data["ranks"]  # a fresh run's: [] (every rank starts its first epoch)
    return ranks[rank] if rank < len(ranks) else {}


def reads_every_step(device: torch.device) -> bool:
    """Whether the loop reads each step's loss at once: free on the CPU, a host sync that
    stalls the GPU's queue elsewhere (then it is read at log and checkpoint steps)."""
    return device.type == "cpu"


def train_step(net, model, opt, sched, scaler, autocast, micro_batches, cfg: TrainConfig,
               d, step: int, mask: float, prepare, check: bool = True) -> torch.Tensor | None:
    """One optimiser step over ``cfg.accum`` micro-batches (``micro_batches()`` gives the
    next one; ``prepare`` puts its video on the device) -> the step's loss (a 0-d tensor on
    the device). With ``check`` the loss is read first (a host sync), and None is returned
    when it is not finite on some rank: then nothing is updated (the optimiser, scheduler
    and weights stay as the last good step left them)."""
    loss_sum = torch.zeros((), device=d.device)
    for micro in range(cfg.accum):
        batch = micro_batches()
        video = prepare(batch["video"])
        sync_grads = micro == cfg.accum - 1 or d.world == 1
        with (contextlib.nullcontext() if sync_grads else net.no_sync()), autocast():
            v, t, scale = net(video, batch["text"], mask,
                              mask_generator(cfg, d.rank, step, micro, d.device))
            loss = contrastive_loss(v, t, scale) / cfg.accum
        (scaler.scale(loss) if scaler else loss).backward()
        loss_sum += loss.detach().float()
    if check and dist.any_rank(not math.isfinite(loss_sum.item()), d):
        opt.zero_grad(set_to_none=True)
        return None
    if cfg.grad_clip > 0:
        if scaler:
            scaler.unscale_(opt)  # clip the true gradients, not the loss-scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    sched.step()
    model.clamp_logit_scale()
    return loss_sum


def finished(run: RunDir, ckpt: dict, cfg: TrainConfig) -> dict:
    """The summary of a run resumed at or past its last step: nothing is trained or written
    (only a missing summary.json is rebuilt from the checkpoint)."""
    from vtk.fileio import read_json

    summary = read_json(run.path / "summary.json")
    if not isinstance(summary, dict) or summary.get("steps") != ckpt["step"]:
        summary = {"train_time_s": round(ckpt.get("train_time_s", 0.0), 3), "clips_per_s": None,
                   "peak_mem_bytes": ckpt.get("peak_mem_bytes"), "steps": ckpt["step"],
                   "complete": True, "world_size": ckpt.get("world"), "final_loss": None,
                   "clips_seen": ckpt["step"] * cfg.batch_size * cfg.accum * ckpt.get("world", 1)}
        run.write_json("summary.json", summary)
    return {**summary, "complete": True, "nothing_to_do": True}


def train(config) -> dict:
    """Train a ViCLIP as ``config`` says (a TrainConfig or a dict of its fields); returns the
    summary (also written to RUN/summary.json). Runs under torchrun as DDP. Resuming a run
    that has reached its last step trains nothing and returns its summary, with
    ``nothing_to_do: true``."""
    from vtk.data.loader import build_loader
    from vtk.data.transforms import normalize

    cfg = prepare_config(config)
    # before anything is written: a set whose build never finished, or whose shards are not
    # the ones (or as large as) its index.json records, is refused (no hashing: cheap)
    for one in _sets(cfg.data):
        if not one.endswith(".tar") and "{" not in one:
            check_counts(one)
    d = dist.setup(cfg.device)
    # One process per run dir (rank 0 holds it for every rank) until train() returns, taken
    # before anything in it is rewritten; then the temps of a killed run go (vtk.locks).
    _lock = lock_folder(cfg.out) if d.main else None
    if d.main:
        remove_stale_temps(cfg.out)
        (Path(cfg.out) / "checkpoint.pt.tmp").unlink(missing_ok=True)  # a save cut off by a kill
    run = RunDir(cfg.out, d.main)
    ckpt = checkpoint.load(run.checkpoint) if cfg.resume and run.checkpoint.exists() else None
    if ckpt is not None and ckpt.get("step", 0) >= cfg.total_steps:
        return finished(run, ckpt, cfg)
    limits.check_inputs(cfg, data_shards(cfg.data, cfg.data_weights), d.device)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    for f in fields(ModelConfig):  # what build_model resolved (text tower, size, joint dim)
        setattr(cfg, f.name, getattr(model.cfg, f.name))
    model.to(d.device).train()
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    autocast, scaler = _autocast(d.device, cfg.amp)
    state = TrainState()
    if ckpt is not None:
        state = restore(ckpt, run.checkpoint, model, opt, sched, scaler, d.world)
        run.truncate_metrics(state.step)
    else:
        run.truncate_metrics(-1)  # a fresh run starts a fresh log
    run.write_json("config.json", saved_config(cfg))
    net = model
    if d.world > 1:
        ids = [d.device.index] if d.device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    multi = cfg.data_weights is not None
    loader = build_loader(cfg.data if multi else data_shards(cfg.data, None),
                          backend=cfg.backend, frames=cfg.frames, size=cfg.size,
                          train=True, batch_size=cfg.batch_size, workers=cfg.workers,
                          captions=cfg.captions, seed=cfg.seed, cache=cfg.cache,
                          # every clip comes out, so that an epoch too short for one batch
                          # is told with its count (Batches skips the short tail itself)
                          normalize=cfg.normalize, drop_last=False, device=str(d.device),
                          flip=cfg.flip, max_sample_bytes=cfg.max_sample_bytes,
                          # on a GPU: uint8 batches (a quarter of the bytes to share and copy),
                          # normalised on the device below
                          uint8=d.device.type == "cuda", resampled=cfg.resampled,
                          num_samples=cfg.train_num_samples, weights=cfg.data_weights,
                          sampling=cfg.sampling)
    workers = getattr(loader, "workers", cfg.workers)  # the frame cache may load in-process
    threads = pick_threads(available_cores(), workers, os.environ.get("OMP_NUM_THREADS"),
                           int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if threads is not None:  # once, for the process (its loader workers have their own one)
        torch.set_num_threads(threads)
    threads_from = ("OMP_NUM_THREADS" if threads is None
                    else f"{available_cores()} cores - {workers} loader workers")
    batches = Batches(loader, cfg.batch_size, data_position(state.data, d.rank), data=cfg.data)
    batches.warm()  # decode/cache warm-up happens here, outside the timed loop
    clips_per_step = cfg.batch_size * cfg.accum * d.world
    prior_peak = state.peak_mem_bytes

    def save(now: TrainState):
        saved["step"] = now.step
        if d.main:
            checkpoint.save(run.checkpoint, {
                **now.as_dict(), "model": model.persistent_state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler else None, "rng": checkpoint.rng_state(),
                "world": d.world, "config": saved_config(cfg)})
        dist.barrier(d)

    def peak():  # the largest over ranks (each rank: its own process / GPU)
        return max(prior_peak, dist.max_over_ranks(meters.peak_memory_bytes(d.device), d))

    def current() -> TrainState:  # the run's state now, time and memory included
        state.data, state.peak_mem_bytes = {"ranks": dist.gather(batches.position(), d)}, peak()
        state.train_time_s = time_before + elapsed()
        return state

    meters.reset_peak_memory(d.device)
    meters.sync(d.device)
    load_before = meters.load_snapshot()
    time_before = state.train_time_s  # the earlier sessions' training time
    t0 = time.perf_counter()

    def elapsed():
        return time.perf_counter() - t0

    def prepare(video):
        video = video.to(d.device, non_blocking=True)
        return normalize(video, cfg.normalize) if video.dtype == torch.uint8 else video

    # On a GPU the loss stays on the device and is read (one host sync) only when a line is
    # logged, a checkpoint written or the run stops; on the CPU reading is free: every step,
    # so that a step whose loss is not finite is never applied.
    lazy = not reads_every_step(d.device)
    saved = {"step": state.step if ckpt is not None else None}  # the last checkpoint on disk
    rate, losses, pending, stopped, loss_value = meters.Throughput(), [], [], False, math.nan
    with StopRequest() as stop, _progress(cfg, d.main) as bar:
        task = bar.add_task("train", total=cfg.total_steps, completed=state.step,
                            loss=float("nan"), rate=0.0, mask=cfg.mask)
        while state.step < cfg.total_steps:
            step = state.step
            mask = cfg.mask if step < cfg.steps else 0.0
            good = batches.position()
            lr = opt.param_groups[0]["lr"]
            loss = train_step(net, model, opt, sched, scaler, autocast, lambda: next(batches),
                              cfg, d, step, mask, prepare, check=not lazy)
            if loss is None:
                # the last good step is saved, not the one that diverged: its batches unspent
                save(dataclasses.replace(current(), data={"ranks": dist.gather(good, d)}))
                raise VtkError(f"{cfg.out}: the loss is not finite at step {step + 1}; step "
                               f"{step} is checkpointed: resume with a smaller --grad-clip, or "
                               f"train again with a lower --lr")
            state.step = step = step + 1
            pending.append(loss.detach())
            clips_s = rate.update(clips_per_step)
            stopped = dist.any_rank(stop.requested or step == cfg.stop_after, d)
            log_now = step % cfg.log_every == 0 or step == cfg.total_steps
            save_now = stopped or step % cfg.checkpoint_every == 0
            if log_now or save_now or not lazy:
                values = torch.stack(pending).float().tolist()
                pending.clear()
                bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
                if dist.any_rank(bad is not None, d):  # only when lazy: weights are spoilt
                    at = step - len(values) + 1 + (bad or 0)
                    kept = (f"the checkpoint of step {saved['step']} is kept: resume it with "
                            f"a smaller --grad-clip, or" if saved["step"] is not None else
                            "no checkpoint was written yet:")
                    raise VtkError(f"{cfg.out}: the loss is not finite at step {at}; {kept} "
                                   f"train again with a lower --lr")
                losses.extend(values)
                loss_value = values[-1]
                bar.update(task, completed=step, loss=loss_value, mask=mask,
                           rate=step * clips_per_step / (time_before + elapsed()))
            if log_now:
                # the stage of the step just run (step - 1), whatever its mask ratio
                stage = "masked" if step <= cfg.steps else "unmasked"
                run.log({"step": step, "stage": stage, "mask": mask,
                         "loss": round(loss_value, 6), "lr": lr,
                         "logit_scale": round(model.scale().item(), 4),
                         "clips_per_s": round(clips_s, 2),
                         "mem_bytes": meters.peak_memory_bytes(d.device),
                         "time_s": round(time_before + elapsed(), 3)})
            if save_now:
                save(current())
            if stopped:
                break
        meters.sync(d.device)
        if not stopped:
            save(current())
        # the last line shows the figure summary.json gets: the final save included
        bar.update(task, rate=state.step * clips_per_step / (time_before + elapsed()))
    step, train_time = state.step, time_before + elapsed()
    cache = getattr(model.text, "cache", None)  # frozen text tower: captions embedded once
    summary = {
        "train_time_s": round(train_time, 3),
        "clips_per_s": round(step * clips_per_step / train_time, 3) if train_time else None,
        "peak_mem_bytes": peak(),
        "device": meters.device_name(d.device),
        "params": sum(p.numel() for p in model.parameters()),
        "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "params_video": sum(p.numel() for p in model.video.parameters()),
        "steps": step,
        "complete": step >= cfg.total_steps,
        "world_size": d.world,
        "clips_seen": step * clips_per_step,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "text_cache_size": len(cache) if cache is not None else None,
        "text_cache_s": round(cache.seconds, 3) if cache is not None else None,
        "torch_threads": torch.get_num_threads(),
        "torch_threads_from": threads_from,
        "load": meters.load_report(load_before, meters.load_snapshot()),
        "versions": meters.versions(),
    }
    run.write_json("summary.json", summary)
    return summary
