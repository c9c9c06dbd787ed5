"""What a run trains with: ``TrainConfig`` (plain data, RUN/config.json), the learning-rate
schedule, and the rules for resuming a run (which options may change, which must not)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from vtk.errors import VtkError
from vtk.model.viclip import ModelConfig
from vtk.train import checkpoint, limits

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
    fsdp: bool = False  # under torchrun: shard the model over the ranks (FSDP2), not DDP
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
    report_to: list | None = None  # trackers beside metrics.jsonl: tensorboard, wandb

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


# Options that may change when a run is resumed; everything else comes from its config.json.
RESUMABLE = ("overwrite", "steps", "unmasked_steps", "checkpoint_every", "log_every", "workers", "device",
             "stop_after", "quiet", "resume", "data", "cache", "backend", "grad_clip", "report_to")

# What decides the mixture a run draws from, with its data: a resume that names its data
# states these too (given, or their defaults), and they must be the saved ones.
SAMPLING = ("resampled", "train_num_samples", "data_weights", "sampling")


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


def prepare_config(config) -> TrainConfig:
    """The config a run trains with: defaults filled in, or the saved one when resuming (then
    only the RESUMABLE options given here replace the saved ones)."""
    from pathlib import Path

    given = config if isinstance(config, dict) else asdict(TrainConfig.from_dict(config))
    cfg = TrainConfig.from_dict(given)
    if cfg.out is None:
        raise VtkError("no run directory: pass --out RUN")
    saved = Path(cfg.out) / "config.json"
    if cfg.resume and (Path(cfg.out) / "checkpoint.pt").exists():
        old = TrainConfig.from_dict(checkpoint.read_config(saved))
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
    sets, saved = data_sets(data), data_sets(old.data)

    def where(p):
        return storage.absolute(p)

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


def data_sets(data) -> list[str]:
    """``data`` as a list of strings (one shard set, or several)."""
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
    """config.json: the run's settings and the format they are written in, without ``out``:
    a run folder may be moved, and where it is then comes from ``--out``, not from what the
    folder says."""
    from vtk.formats import stamp

    return stamp("config", {k: v for k, v in asdict(cfg).items() if k != "out"})


def data_shards(data, weights) -> list[str]:
    """Every tar of ``data``: one shard set, or a list of sets (each a folder or pattern; a
    list of tar paths when no weights are given and every entry is a tar)."""
    from vtk.data.shardset import resolve_shards

    if isinstance(data, (list, tuple)) and (weights is not None or len(data) > 1 and not all(
            str(x).endswith(".tar") for x in data)):
        return [p for one in data for p in resolve_shards(one)]
    return resolve_shards(data[0] if isinstance(data, (list, tuple)) and len(data) == 1
                          else data)
