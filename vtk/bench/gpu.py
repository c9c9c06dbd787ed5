"""`vtk bench gpu`: one command that checks a GPU machine for training in a few minutes.

Three parts, each timed by the library call that the rest of vtk uses, on one device:

1. decode: DALI's ``mixed`` decoder (NVDEC) on H.264 shards beside the CPU loaders (pyav, and
   decord / torchcodec where installed): ``vtk.bench.decode.bench_backend``, loader and raw
   decode ceiling, clips/s;
2. model: ViCLIP-B/16 (random init, 8 frames at 224 px, bf16 autocast, one fixed batch) step
   time and peak CUDA memory at masks 0, 0.5, 0.7 and 0.9 (``vtk.bench.train.run``), with the
   memory floor that ``vtk train`` checks before it starts (``vtk.train.limits.step_bytes``)
   beside the measured peak: a floor above the peak would refuse runs that fit;
3. train: a 200-step batch-16 ``vtk.train.train(backend="dali")`` stopped at step 100
   (``stop_after``: checkpointed, as on SIGTERM), resumed with ``resume=True`` and finished:
   it must end complete at step 200 with one metrics line a logged step; step time per session
   and what the resume cost before its first step.

The shards are the synthetic world (``vtk.shards.build_shard_set``), built first into a
temporary folder, or a set passed with ``--shards``. Without a GPU the same code runs with the
``cpu`` profile: the tiny model at 32 px, a few steps, and VP9 shards so that DALI's CPU decoder
(``device="cpu"``) can read them; the tests run it so, and CI proves the command runs. A part
that fails is recorded as ``error: ...`` and the others still run; the exit status is 1 then.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click


@dataclass
class Profile:
    """The sizes of one check. ``gpu``: what issue 14 asks of a GPU; ``cpu``: the same paths
    small enough for a test on 2 cores."""

    codec: str  # shards built for the check: h264 (NVDEC) or vp9 (DALI's CPU decoder)
    clips: int  # synthetic clips in the shard set
    clip_size: int  # their side (px)
    clip_frames: int  # frames a clip (8 fps)
    per_shard: int
    decode_size: int  # loader output side
    decode_batch: int
    decode_passes: int  # timed passes a backend (after one untimed)
    workers: int  # CPU loader workers and shard workers
    model: str
    size: int
    frames: int
    model_batch: int
    model_steps: int  # timed steps a mask ratio
    model_warmup: int
    train_batch: int
    train_steps: int
    log_every: int


def profiles() -> dict[str, Profile]:
    cores = os.cpu_count() or 1
    return {
        "gpu": Profile(codec="h264", clips=512, clip_size=224, clip_frames=16, per_shard=128,
                       decode_size=224, decode_batch=32, decode_passes=3,
                       workers=max(1, min(8, cores - 2)), model="b16", size=224, frames=8,
                       model_batch=32, model_steps=30, model_warmup=3, train_batch=16,
                       train_steps=200, log_every=10),
        "cpu": Profile(codec="vp9", clips=16, clip_size=32, clip_frames=16, per_shard=6,
                       decode_size=32, decode_batch=4, decode_passes=1, workers=1,
                       model="tiny", size=32, frames=8, model_batch=4, model_steps=2,
                       model_warmup=1, train_batch=4, train_steps=6, log_every=1),
    }


MASKS = (0.0, 0.5, 0.7, 0.9)


def status_of(error: BaseException) -> str:
    """``error: Type: first line`` for the JSON and the table."""
    first = (str(error).strip().splitlines() or [""])[0][:300]
    return f"error: {type(error).__name__}: {first}"


def build_shards(p: Profile, out: str) -> dict:
    """The synthetic shard set of the profile (fine captions from the synthetic world's truth:
    what ``vtk train`` reads), with DALI's .idx files."""
    from vtk.shards.build_set import build_shard_set

    t0 = time.perf_counter()
    spec = f"synth:train?n={p.clips}&size={p.clip_size}&frames={p.clip_frames}&seed=14"
    index = build_shard_set([spec], out, captions="fine", codec=p.codec,
                            samples_per_shard=p.per_shard, workers=p.workers)
    return {"path": out, "built": True, "codec": p.codec, "clips": index["num_samples"],
            "num_shards": index["num_shards"], "seconds": round(time.perf_counter() - t0, 2)}


def describe_shards(path: str) -> dict:
    """What a given set holds (its card), for the report."""
    from vtk.data.dali import shard_codec
    from vtk.data.shardset import resolve_shards

    paths = resolve_shards(path)
    card = Path(path) / "index.json"
    n = json.loads(card.read_text()).get("num_samples") if card.is_file() else None
    return {"path": path, "built": False, "codec": shard_codec(paths), "clips": n,
            "num_shards": len(paths), "seconds": 0.0}


def decode_part(shards: str, p: Profile, gpu: bool, backends: list[str] | None) -> dict:
    """Loader and ceiling clips/s per backend; a backend not installed is skipped, named."""
    from vtk.bench.decode import bench_backend
    from vtk.data.decoders import available_decoders
    from vtk.data.shardset import resolve_shards
    from vtk.errors import VtkError

    paths = resolve_shards(shards)
    names = backends or ["dali"] + available_decoders()
    rows, skipped = [], {}
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in names:
            try:
                # on a GPU the CPU loaders hand out uint8 (vtk train normalises on the device)
                row = bench_backend(paths, name, p.frames, p.decode_size, p.workers,
                                    p.decode_batch, p.decode_passes, cache_dir, uint8=gpu)
            except VtkError as e:  # not installed, or DALI's CPU decoder and H.264
                skipped[name] = str(e)
                continue
            row["decoder"] = ("dali mixed (GPU)" if gpu else "dali cpu") if name == "dali" \
                else f"{name} ({p.workers} workers)"
            rows.append(row)
    if not rows:
        raise VtkError(f"no decode backend ran: {skipped}")
    return {"rows": rows, "skipped": skipped}


def model_part(p: Profile, device: str) -> dict:
    """``vtk bench train``'s measurement at the four masks, and ``vtk train``'s memory floor
    for the same step beside each measured peak."""
    from vtk.bench.train import run
    from vtk.environment import pick_device
    from vtk.train import limits
    from vtk.train.config import TrainConfig

    dev = pick_device(device)
    rows = run(list(MASKS), p.model, p.size, p.frames, p.model_batch, p.model_steps,
               warmup=p.model_warmup, device=device)
    for row in rows:
        cfg = TrainConfig(model=p.model, text="tiny", frames=p.frames, size=p.size,
                          mask=row["mask"], batch_size=p.model_batch,
                          amp="bf16" if dev.type == "cuda" else "off").fill_defaults()
        geometry = limits.tower(cfg)
        floor = limits.step_bytes(cfg, geometry, dev)[0] if geometry else None
        row["floor_bytes"] = floor
        # the floor must stay below what a step really takes (CUDA: allocated bytes; on the
        # CPU the peak is the process's RSS, which holds far more than one step)
        row["floor_below_peak"] = None if floor is None else floor <= row["peak_mem_bytes"]
    return {"rows": rows}


def metrics_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln]
    return [r["step"] for r in rows]


def train_part(shards: str, p: Profile, device: str, backend: str, out: str) -> dict:
    """Train half the steps (the run checkpoints and stops, as preempted), resume to the end,
    and check the run is whole: complete, at the last step, each logged step once."""
    from vtk.errors import VtkError
    from vtk.train import train

    half = p.train_steps // 2
    config = dict(data=shards, out=out, model=p.model, text="tiny", freeze_text=True,
                  frames=p.frames, size=p.size, batch_size=p.train_batch, steps=p.train_steps,
                  backend=backend, device=device, workers=p.workers, log_every=p.log_every,
                  checkpoint_every=p.train_steps, quiet=True)
    t0 = time.perf_counter()
    first = train({**config, "stop_after": half})
    wall1 = time.perf_counter() - t0
    if first["steps"] != half or first["complete"]:
        raise VtkError(f"{out}: the first session stopped at step {first['steps']}, "
                       f"not {half}")
    t0 = time.perf_counter()
    second = train({**config, "resume": True})
    wall2 = time.perf_counter() - t0
    steps = metrics_steps(Path(out))
    want = sorted({*range(p.log_every, p.train_steps + 1, p.log_every), p.train_steps})
    if not second["complete"] or second["steps"] != p.train_steps or steps != want:
        raise VtkError(f"{out}: the resumed run is not whole: complete={second['complete']}, "
                       f"step {second['steps']} of {p.train_steps}, logged steps "
                       f"{steps[:3]}...{steps[-3:]}")
    t1 = first["train_time_s"]
    t2 = second["train_time_s"] - t1  # train_time_s counts both sessions
    return {"backend": backend, "model": p.model, "size": p.size, "frames": p.frames,
            "batch_size": p.train_batch, "steps": second["steps"], "stopped_at": first["steps"],
            "complete": True, "step_s_first": round(t1 / half, 5),
            "step_s_resumed": round(t2 / (p.train_steps - half), 5),
            "resume_overhead_s": round(wall2 - t2, 2), "wall_s_first": round(wall1, 2),
            "wall_s_resumed": round(wall2, 2), "clips_per_s": second["clips_per_s"],
            "peak_mem_bytes": second["peak_mem_bytes"], "final_loss": second["final_loss"],
            "device": second["device"]}


def run_check(shards: str | None = None, device: str = "auto", profile: str | None = None,
              backends: list[str] | None = None, train_backend: str = "dali",
              parts=("decode", "model", "train"), overrides: dict | None = None) -> dict:
    """The whole check -> one dict (``vtk bench gpu --json``). ``profile`` follows the device
    (gpu on CUDA, else cpu); ``overrides`` replaces Profile fields (tests, smaller GPUs)."""
    import torch

    from vtk.environment import pick_device
    from vtk.train import meters

    dev = pick_device(device)
    gpu = dev.type == "cuda"
    name = profile or ("gpu" if gpu else "cpu")
    p = replace(profiles()[name], **(overrides or {}))
    t_start = time.perf_counter()
    report = {"profile": name, "settings": asdict(p), "device": meters.device_name(dev),
              "versions": meters.versions(), "load_before": meters.load_snapshot()["loadavg"]}
    with tempfile.TemporaryDirectory(prefix="vtk-bench-gpu-") as tmp:
        try:
            report["shards"] = (describe_shards(shards) if shards
                                else build_shards(p, os.path.join(tmp, "shards")))
            report["shards"]["status"] = "ok"
        except Exception as e:  # nothing else can run without shards
            report["shards"] = {"status": status_of(e)}
        data = report["shards"].get("path")
        work = {"decode": lambda: decode_part(data, p, gpu, backends),
                "model": lambda: model_part(p, str(dev)),
                "train": lambda: train_part(data, p, str(dev), train_backend,
                                            os.path.join(tmp, "run"))}
        for part in ("decode", "model", "train"):
            if part not in parts:
                report[part] = {"status": "skipped: not asked for"}
                continue
            if data is None and part != "model":
                report[part] = {"status": "skipped: no shards"}
                continue
            t0 = time.perf_counter()
            try:
                report[part] = {"status": "ok", **work[part]()}
            except Exception as e:  # a GPU check reports every part it can
                report[part] = {"status": status_of(e)}
            report[part]["seconds"] = round(time.perf_counter() - t0, 2)
            if gpu:
                torch.cuda.empty_cache()
        if report["shards"].get("built"):
            report["shards"]["path"] = None  # a temporary folder, gone now
    report["wall_s"] = round(time.perf_counter() - t_start, 2)
    report["load_after"] = meters.load_snapshot()["loadavg"]
    report["ok"] = not any(str(report[k].get("status", "")).startswith("error")
                           for k in ("shards", "decode", "model", "train"))
    return report


def tables(report: dict) -> list:
    """The rich tables of a report: decode, model, train."""
    from rich.table import Table

    mib = 2**20
    out = []
    d = report.get("decode", {})
    t = Table(title=f"decode ({report['settings']['frames']} frames, "
                    f"{report['settings']['decode_size']} px, {report['shards'].get('codec')} "
                    f"shards): {d.get('status')}")
    for col in ("decoder", "clips/s", "CPU ms/clip", "ceiling clips/s", "ratio", "video"):
        t.add_column(col, justify="left" if col == "decoder" else "right")
    for r in d.get("rows", []):
        t.add_row(r["decoder"], f"{r['clips_per_s']:.1f}", f"{r['cpu_ms_per_clip']:.1f}",
                  "-" if r["ceiling_clips_per_s"] is None else f"{r['ceiling_clips_per_s']:.1f}",
                  "-" if r["ratio"] is None else f"{r['ratio']:.2f}", r["video"])
    for name, why in d.get("skipped", {}).items():
        t.add_row(name, "skipped", why[:60], "", "", "")
    out.append(t)
    m = report.get("model", {})
    rows = m.get("rows", [])
    head = rows[0] if rows else {}
    t = Table(title=f"model {head.get('model', '')} ({head.get('frames', '')} x "
                    f"{head.get('size', '')} px, batch {head.get('batch_size', '')}): "
                    f"{m.get('status')}")
    for col in ("mask", "tokens", "step s", "clips/s", "speedup", "peak MiB", "floor MiB"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(f"{r['mask']:.1f}", str(r["tokens"]), f"{r['step_s']:.4f}",
                  f"{r['clips_per_s']:.1f}",
                  "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                  f"{r['peak_mem_bytes'] / mib:.0f}",
                  "-" if r["floor_bytes"] is None else f"{r['floor_bytes'] / mib:.0f}")
    out.append(t)
    tr = report.get("train", {})
    t = Table(title=f"train, stopped and resumed: {tr.get('status')}")
    for col in ("backend", "steps", "stopped at", "step s (1st)", "step s (resumed)",
                "resume cost s", "clips/s", "peak MiB"):
        t.add_column(col, justify="right")
    if "steps" in tr:
        t.add_row(tr["backend"], str(tr["steps"]), str(tr["stopped_at"]),
                  f"{tr['step_s_first']:.4f}", f"{tr['step_s_resumed']:.4f}",
                  f"{tr['resume_overhead_s']:.1f}", f"{tr['clips_per_s']:.1f}",
                  f"{tr['peak_mem_bytes'] / mib:.0f}")
    out.append(t)
    return out


@click.command("gpu")
@click.option("--shards", type=click.Path(exists=True, file_okay=False), default=None,
              help="A shard set to read (H.264 on a GPU; VP9 for DALI on the CPU)  "
                   "[a synthetic set built first]")
@click.option("--device", default="auto", show_default=True)
@click.option("--profile", type=click.Choice(["gpu", "cpu"]), default=None,
              help="Sizes of the check  [gpu on CUDA, else cpu: tiny model, VP9]")
@click.option("--backends", default=None,
              help="Decode backends, comma-separated  [dali and every installed CPU decoder]")
@click.option("--train-backend", default="dali", show_default=True,
              help="Loader of the stopped-and-resumed training run")
@click.option("--parts", default="decode,model,train", show_default=True,
              help="Which parts to run, comma-separated")
@click.option("--train-steps", type=click.IntRange(min=2), default=None,
              help="Steps of the training run (stopped at half)  [200 gpu, 6 cpu]")
@click.option("--clips", type=click.IntRange(min=1), default=None,
              help="Clips of the built shard set  [512 gpu, 16 cpu]")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the whole report here.")
def command(shards, device, profile, backends, train_backend, parts, train_steps, clips,
            json_out):
    """A GPU machine checked in minutes: DALI vs CPU decode, ViCLIP-B/16 step time and
    memory at masks 0-0.9, and a stopped, resumed and finished DALI training run.

    \b
    Example:  vtk bench gpu --json bench-gpu.json
    """
    from rich.console import Console

    from vtk.fileio import write_json

    overrides = {k: v for k, v in (("train_steps", train_steps), ("clips", clips)) if v}
    report = run_check(shards, device, profile,
                       [b.strip() for b in backends.split(",")] if backends else None,
                       train_backend, tuple(x.strip() for x in parts.split(",")), overrides)
    console = Console()
    for t in tables(report):
        console.print(t)
    console.print(f"{report['device']}, profile {report['profile']}, {report['wall_s']:.0f} s; "
                  f"load {report['load_before']} -> {report['load_after']}")
    if json_out:
        write_json(json_out, report, indent=2)
    if not report["ok"]:
        failed = [k for k in ("shards", "decode", "model", "train")
                  if str(report[k].get("status", "")).startswith("error")]
        console.print(f"[red]failed:[/] {', '.join(failed)}")
        raise SystemExit(1)
