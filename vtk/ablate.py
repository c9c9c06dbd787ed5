"""The two ablations: caption scale (coarse / fine / both / mixed) and video masking ratio.

Each arm x seed is one run directory ``OUT/<ablation>-<arm>-s<seed>/`` holding the trainer's
files, ``eval.json`` and ``ablation.json`` (which ablation, arm and seed, and a fingerprint of
the training settings, defaults included). An arm trained to its last step with the same
settings and evaluated on every benchmark asked for is skipped on a rerun; an arm killed
mid-training resumes from its checkpoint; an arm trained with other settings is trained again
from scratch. An arm whose training settings equal
a finished run's (e.g. ``captions=fine`` at mask 0 and ``mask=0`` with fine captions) reuses
that run's checkpoint and results instead of training the same thing twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vtk.errors import VtkError
from vtk.fileio import read_json, write_json

# Settings that do not change what is trained: left out of the fingerprint.
_NOT_TRAINING = {"out", "resume", "overwrite", "quiet", "log_every", "checkpoint_every",
                 "workers", "stop_after"}


@dataclass
class Arm:
    ablation: str  # captions | mask
    arm: str  # coarse | fine | both | mixed | "0.5" ...
    seed: int
    train: dict  # TrainConfig fields for this arm

    @property
    def name(self) -> str:
        return f"{self.ablation}-{self.arm}-s{self.seed}"


def plan(ablation: str, values: list[str], seeds: int, base: dict, seed0: int = 0) -> list[Arm]:
    """The arms of one ablation: every value x ``seeds`` seeds, over the shared ``base``
    training settings (``captions`` for the mask ablation, ``mask`` for the caption one)."""
    arms = []
    for s in range(seed0, seed0 + seeds):
        for v in values:
            cfg = dict(base, seed=s)
            if ablation == "captions":
                cfg["captions"] = v
            elif ablation == "mask":
                v = _ratio_label(v)
                cfg["mask"] = float(v)
            else:
                raise ValueError(ablation)
            arms.append(Arm(ablation, v, s, cfg))
    return arms


def _ratio_label(v) -> str:
    r = float(v)
    if not 0.0 <= r < 1.0:
        raise VtkError(f"--ratios: {v} is not a masking ratio in [0, 1)")
    return f"{r:g}"


def fingerprint(train_cfg: dict) -> str:
    """What is trained, with the trainer's defaults filled in: a default that changes between
    versions changes the fingerprint too."""
    from dataclasses import asdict

    from vtk.train.trainer import TrainConfig

    full = asdict(TrainConfig.from_dict(train_cfg))
    key = {k: v for k, v in sorted(full.items()) if k not in _NOT_TRAINING}
    if key.get("data"):
        key["data"] = str(Path(key["data"]).resolve())
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trained(run: Path) -> bool:
    """Training ran to its last step (a run stopped by SIGINT/SIGTERM writes a summary with
    ``complete: false`` and resumes from its checkpoint instead)."""
    return bool((read_json(run / "summary.json") or {}).get("complete"))


def _finished(run: Path, benches: list[str], fp: str) -> bool:
    """Trained with these settings to the end, and evaluated on every benchmark asked for."""
    if (read_json(run / "ablation.json") or {}).get("fingerprint") != fp or not trained(run):
        return False
    done = set((read_json(run / "eval.json") or {}).get("benchmarks", {}))
    from vtk.eval.benchmarks import parse_bench

    return {spec.name for spec in parse_bench(benches)} <= done


def _twin(out: Path, fp: str, me: Path, benches: list[str]) -> Path | None:
    """A finished run under ``out`` trained with the same settings."""
    for tag in sorted(out.glob("*/ablation.json")):
        if tag.parent != me and _finished(tag.parent, benches, fp):
            return tag.parent
    return None


def _copy_run(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        # not the hidden lock and temps: a hard-linked .lock would tie the two runs' locks
        if f.name == "ablation.json" or f.name.startswith(".") or not f.is_file():
            continue
        try:
            os.link(f, dst / f.name)  # checkpoints can be large: share the bytes
        except OSError:
            shutil.copy2(f, dst / f.name)


def _train_child(cfg: dict, parent: int) -> None:
    from vtk.train import train
    from vtk.workers import exit_with_parent

    # a killed vtk ablate must not leave its arm training alone, holding the run's lock:
    # SIGTERM, so that the arm checkpoints and stops as on Ctrl-C
    exit_with_parent(parent, signal.SIGTERM)
    train(cfg)


def train_isolated(cfg: dict) -> None:
    """Train one arm in a fresh process: peak RSS (the CPU memory figure) is a per-process
    high-water mark, so arms trained one after another in one process would inherit each
    other's peak. The child checkpoints on SIGINT like ``vtk train``."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=_train_child,
                                                         args=(cfg, os.getpid()))
    child.start()
    try:
        child.join()
    except KeyboardInterrupt:
        child.join()  # the child got the same SIGINT: let it write its checkpoint
        raise
    if child.exitcode != 0:
        raise VtkError(f"{cfg.get('out')}: training failed (exit code {child.exitcode}); "
                       f"rerun to resume from its last checkpoint")


def run_arms(arms: list[Arm], out: str | Path, benches: list[str], eval_opts: dict | None = None,
             log: Callable[[str], None] = print) -> list[Path]:
    """Train and evaluate every arm that is not finished yet; returns the run folders."""
    from vtk.eval.evaluate import evaluate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i, arm in enumerate(arms, 1):
        run = out / arm.name
        runs.append(run)
        head = f"[{i}/{len(arms)}] {arm.ablation}={arm.arm} seed={arm.seed}"
        fp = fingerprint(arm.train)
        if _finished(run, benches, fp):
            log(f"{head}: finished earlier, skipped ({run})")
            continue
        old = read_json(run / "ablation.json")
        fresh = old is None or old.get("fingerprint") != fp
        if old is not None and fresh:
            log(f"{head}: {run} was trained with other settings: training it again")
            shutil.rmtree(run)
        run.mkdir(parents=True, exist_ok=True)
        tag = {"ablation": arm.ablation, "arm": arm.arm, "seed": arm.seed, "fingerprint": fp}
        twin = _twin(out, fp, run, benches)
        if twin is not None and fresh:
            _copy_run(twin, run)
            tag["reused_from"] = twin.name
            write_json(run / "ablation.json", tag)
            log(f"{head}: same training settings as {twin.name}, results reused")
            continue
        write_json(run / "ablation.json", tag)
        t0 = time.perf_counter()
        if not trained(run):
            resume = (run / "checkpoint.pt").exists()
            log(f"{head}: training{' (resuming)' if resume else ''} -> {run}")
            train_isolated(dict(arm.train, out=str(run), resume=resume, overwrite=not resume))
            if not trained(run):
                raise VtkError(f"{run}: training stopped before its last step; rerun to resume")
        log(f"{head}: evaluating on {', '.join(benches)}")
        evaluate(run, benches, **(eval_opts or {}))
        log(f"{head}: done in {time.perf_counter() - t0:.0f} s")
    return runs
