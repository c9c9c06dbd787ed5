"""The training loop: it only orders the steps. Config, run dir, checkpoints, metrics, runtime
(signals, mixed precision, threads) and parallelism live in their own modules.

    batch -> encode video (masked) and text -> symmetric InfoNCE -> AdamW step -> log
         every N steps and on SIGINT/SIGTERM -> checkpoint (resumable exactly)

Two stages: ``steps`` masked steps (warmup + cosine), then ``unmasked_steps`` with every token
at ``unmasked_lr_scale`` x the learning rate (ViCLIP's unmasked final stage).
"""

from __future__ import annotations

import math
import time
from dataclasses import fields

import numpy as np
import torch

from vtk.data.epochs import Batches
from vtk.errors import VtkError
from vtk.model import build_model
from vtk.model.loss import contrastive_loss
from vtk.model.viclip import ModelConfig
from vtk.shards.integrity import check_counts
from vtk.train import checkpoint, dist, limits, meters, parallel, runtime, trackers
from vtk.train.checkpoint import Checkpointer, TrainState
from vtk.train.config import (
    TrainConfig,
    data_sets,
    data_shards,
    lr_factor,
    prepare_config,
    saved_config,
)
from vtk.train.rundir import RunDir


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on biases, norms, embeddings or the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas,
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; ``fused``: torch's fused kernel, one pass over every
    parameter (on the CPU a step of the tiny model took 0.33 ms fused, 1.7 ms as one set of
    ops a tensor: a cost that does not shrink with the masked tokens)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas,
                             fused=fused or None)


def mask_generator(cfg: TrainConfig, rank: int, step: int, micro: int, device) -> torch.Generator:
    """Token masking randomness as a pure function of (seed, rank, step, micro-batch): nothing
    to save for an exact resume, and a different mask on every rank and step."""
    seed = int(np.random.SeedSequence([cfg.seed, rank, step, micro]).generate_state(1)[0])
    return torch.Generator(device).manual_seed(seed)


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
        with parallel.grad_sync(net, micro == cfg.accum - 1), autocast():
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


class Trainer:
    """A run's parts as attributes (model, optimiser, schedule, scaler, batches, state,
    checkpointer, loss log); ``step()`` trains one optimiser step and ``run()`` orders the
    steps, logs and checkpoints. ``ckpt``: the checkpoint a resumed run starts from."""

    def __init__(self, cfg: TrainConfig, d: dist.Dist, run: RunDir, ckpt: dict | None):
        from vtk.data.loader import build_loader

        self.cfg, self.d, self.run_dir = cfg, d, run
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg)
        for f in fields(ModelConfig):  # what build_model resolved (text tower, size, joint dim)
            setattr(cfg, f.name, getattr(self.model.cfg, f.name))
        self.model.to(d.device).train()
        self.net = parallel.wrap(self.model, d, cfg.fsdp)  # before the optimiser sees the params
        # fused on the CPU (FSDP's sharded parameters keep the default)
        self.opt = make_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.betas,
                                  fused=d.device.type == "cpu" and not cfg.fsdp)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        self.autocast, self.scaler = runtime.autocast(d.device, cfg.amp)
        multi = cfg.data_weights is not None
        loader = build_loader(
            cfg.data if multi else data_shards(cfg.data, None), backend=cfg.backend,
            frames=cfg.frames, size=cfg.size, train=True, batch_size=cfg.batch_size,
            workers=cfg.workers, captions=cfg.captions, seed=cfg.seed, cache=cfg.cache,
            # every clip comes out, so that an epoch too short for one batch is told with its
            # count (Batches skips the short tail itself)
            normalize=cfg.normalize, drop_last=False, device=str(d.device), flip=cfg.flip,
            max_sample_bytes=cfg.max_sample_bytes,
            # on a GPU: uint8 batches (a quarter of the bytes to share and copy), normalised on
            # the device in `prepare`
            uint8=d.device.type == "cuda", resampled=cfg.resampled,
            num_samples=cfg.train_num_samples, weights=cfg.data_weights, sampling=cfg.sampling)
        # the frame cache may load in-process: its workers are the loader's own count
        self.threads_from = runtime.set_threads(getattr(loader, "workers", cfg.workers))
        self.batches = Batches(loader, cfg.batch_size, data=cfg.data)
        sharded = parallel.is_sharded(self.net)  # FSDP: parts gathered whole to save
        self.checkpointer = Checkpointer(
            run.checkpoint, {"model": (parallel.ShardedWeights if sharded else
                                       checkpoint.Weights)(self.model),
                             "optimizer": (parallel.ShardedOptimizer(self.model, self.opt)
                                           if sharded else self.opt),
                             "scheduler": self.sched, "scaler": self.scaler,
                             "rng": checkpoint.Rng(), "data": self.batches},
            d, saved_config(cfg), ranked=("data",))
        self.state = TrainState()
        if ckpt is not None:
            self.state = self.checkpointer.restore(ckpt)
        run.truncate_metrics(self.state.step if ckpt is not None else -1)
        run.write_json("config.json", saved_config(cfg))
        # rank 0 reports what it logs (metrics.jsonl) to the trackers too
        self.trackers = trackers.Trackers(cfg.report_to if d.main else None, run.path,
                                          saved_config(cfg), self.state.step)
        self.losses = meters.LossLog(reads_every_step(d.device),
                                     agree=lambda flag: dist.any_rank(flag, d))
        self.clips_per_step = cfg.batch_size * cfg.accum * d.world
        self.rate = meters.Throughput()
        self.batches.warm()  # decode/cache warm-up happens here, outside the timed loop

    def prepare(self, video: torch.Tensor) -> torch.Tensor:
        from vtk.data.transforms import normalize

        video = video.to(self.d.device, non_blocking=True)
        return normalize(video, self.cfg.normalize) if video.dtype == torch.uint8 else video

    def mask(self) -> float:
        """The mask ratio of the next step: the masked stage's, then none."""
        return self.cfg.mask if self.state.step < self.cfg.steps else 0.0

    def step(self) -> None:
        """Train one optimiser step; on a loss that is not finite (read at once on the CPU)
        the last good step is checkpointed, its batches unspent, and a VtkError raised."""
        step, good = self.state.step, self.batches.state_dict()
        self.lr = self.opt.param_groups[0]["lr"]
        loss = train_step(self.net, self.model, self.opt, self.sched, self.scaler,
                          self.autocast, lambda: next(self.batches), self.cfg, self.d, step,
                          self.mask(), self.prepare, check=self.losses.every_step)
        if loss is None:
            self.save(data=good)
            raise VtkError(f"{self.cfg.out}: the loss is not finite at step {step + 1}; step "
                           f"{step} is checkpointed: resume with a smaller --grad-clip, or "
                           f"train again with a lower --lr")
        self.state.step += 1
        self.losses.add(loss)
        self.clips_s = self.rate.update(self.clips_per_step)

    def read_losses(self) -> float:
        """The pending losses read (one host sync on a GPU) -> the last; a VtkError naming
        the first step whose loss was not finite (the weights are spoilt: nothing is saved)."""
        try:
            return self.losses.read(self.state.step)
        except meters.NonFiniteLoss as e:
            saved = self.checkpointer.last_step
            kept = (f"the checkpoint of step {saved} is kept: resume it with a smaller "
                    f"--grad-clip, or" if saved is not None else "no checkpoint was written yet:")
            raise VtkError(f"{self.cfg.out}: the loss is not finite at step {e.step}; {kept} "
                           f"train again with a lower --lr") from None

    def log(self, mask: float) -> None:
        step = self.state.step
        row = {"step": step, "stage": "masked" if step <= self.cfg.steps else "unmasked",
               "mask": mask, "loss": round(self.losses.last, 6), "lr": self.lr,
               "logit_scale": round(parallel.full(self.model.scale()).item(), 4),
               "clips_per_s": round(self.clips_s, 2),
               "mem_bytes": meters.peak_memory_bytes(self.d.device),
               "time_s": round(self.train_time(), 3)}
        self.run_dir.log(row)
        self.trackers.log(row)

    def save(self, **states) -> None:
        """A checkpoint of the run now: its time and peak memory (over every rank) brought
        up to date first."""
        self.state.train_time_s, self.state.peak_mem_bytes = self.train_time(), self.peak()
        self.checkpointer.save(self.state, **states)

    def run(self) -> dict:
        """Train to the last step (or a stop request, or ``stop_after``) -> the summary."""
        cfg, d, state = self.cfg, self.d, self.state
        self.start()
        with runtime.StopRequest() as stop, self.progress() as bar, self.trackers:
            task = bar.add_task("train", total=cfg.total_steps, completed=state.step,
                                loss=float("nan"), rate=0.0, mask=cfg.mask)
            stopped = False
            while state.step < cfg.total_steps and not stopped:
                mask = self.mask()
                self.step()
                stopped = dist.any_rank(stop.requested or state.step == cfg.stop_after, d)
                log_now = state.step % cfg.log_every == 0 or state.step == cfg.total_steps
                save_now = stopped or state.step % cfg.checkpoint_every == 0
                if self.losses.due(log_now, save_now):
                    bar.update(task, completed=state.step, loss=self.read_losses(), mask=mask,
                               rate=self.average_rate())
                if log_now:
                    self.log(mask)
                if save_now:
                    self.save()
            meters.sync(d.device)
            if not stopped:
                self.save()
            # the last line shows the figure summary.json gets: the final save included
            bar.update(task, rate=self.average_rate())
        return self.summary()

    def start(self) -> None:
        """The clocks start: time and memory of this session (earlier ones are in state)."""
        self.prior_peak, self.time_before = self.state.peak_mem_bytes, self.state.train_time_s
        meters.reset_peak_memory(self.d.device)
        meters.sync(self.d.device)
        self.load_before = meters.load_snapshot()
        self.t0 = time.perf_counter()

    def train_time(self) -> float:
        return self.time_before + time.perf_counter() - self.t0

    def average_rate(self) -> float:
        """Clips a second since the run began (summary.json's figure)."""
        return self.state.step * self.clips_per_step / self.train_time()

    def peak(self) -> int:
        """Peak memory over every rank (each rank: its own process or GPU) and session."""
        return max(self.prior_peak,
                   dist.max_over_ranks(meters.peak_memory_bytes(self.d.device), self.d))

    def progress(self):
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
            TextColumn("{task.fields[rate]:.1f} clips/s"), TimeElapsedColumn(),
            TimeRemainingColumn(),
            line="train mask {mask:.2f} loss {loss:.3f} | {rate:.1f} clips/s (average)",
            disable=self.cfg.quiet or not self.d.main)

    def summary(self) -> dict:
        """summary.json, written and returned."""
        model, step, train_time = self.model, self.state.step, self.train_time()
        cache = getattr(model.text, "cache", None)  # frozen text tower: captions embedded once
        summary = {
            "train_time_s": round(train_time, 3),
            "clips_per_s": round(self.average_rate(), 3) if train_time else None,
            "peak_mem_bytes": self.peak(),
            "device": meters.device_name(self.d.device),
            "params": sum(p.numel() for p in model.parameters()),
            "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "params_video": sum(p.numel() for p in model.video.parameters()),
            "steps": step,
            "complete": step >= self.cfg.total_steps,
            "world_size": self.d.world,
            "clips_seen": step * self.clips_per_step,
            "final_loss": self.losses.final(),
            "text_cache_size": len(cache) if cache is not None else None,
            "text_cache_s": round(cache.seconds, 3) if cache is not None else None,
            "torch_threads": torch.get_num_threads(),
            "torch_threads_from": self.threads_from,
            "load": meters.load_report(self.load_before, meters.load_snapshot()),
            "versions": meters.versions(),
        }
        self.run_dir.write_json("summary.json", summary)
        return summary


def train(config) -> dict:
    """Train a ViCLIP as ``config`` says (a TrainConfig or a dict of its fields); returns the
    summary (also written to RUN/summary.json). Runs under torchrun as DDP. Resuming a run
    that has reached its last step trains nothing and returns its summary, with
    ``nothing_to_do: true``."""
    cfg = prepare_config(config)
    # before anything is written: a set whose build never finished, or whose shards are not
    # the ones (or as large as) its index.json records, is refused (no hashing: cheap)
    for one in data_sets(cfg.data):
        if not one.endswith(".tar") and "{" not in one:
            check_counts(one)
    limits.check_captions(cfg.captions, data_sets(cfg.data))
    trackers.check(cfg.report_to)  # a tracker's library missing: told before anything is written
    d = dist.setup(cfg.device)
    with RunDir.held(cfg.out, d.main) as run:
        ckpt = checkpoint.load(run.checkpoint) if cfg.resume and run.checkpoint.exists() else None
        if ckpt is not None and ckpt["step"] >= cfg.total_steps:
            return run.finished(ckpt, cfg.batch_size * cfg.accum)
        limits.check_inputs(cfg, data_shards(cfg.data, cfg.data_weights), d.device)
        return Trainer(cfg, d, run, ckpt).run()
