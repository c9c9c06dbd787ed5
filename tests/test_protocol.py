"""WiSE-FT and the evaluation protocol card: interpolated weights checked by hand on tiny real
models, the plain and internvid protocols on one trained run (their cards and the numbers the
settings move), InternVid's text clean-up, the whole-frame eval crop, and vtk eval viclip:PATH."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from test_released import official_state

from vtk.cli import main
from vtk.errors import VtkError
from vtk.eval import protocol as P
from vtk.eval.evaluate import evaluate
from vtk.model import build_model, init_state, wiseft

torch.set_num_threads(1)
needs_bpe = pytest.mark.skipif(importlib.util.find_spec("open_clip") is None,
                               reason="pip install --no-deps open_clip_torch (BPE vocabulary)")
BENCHES = ["synth-k400?n=12", "synth-msrvtt?n=12"]


def test_interpolation_by_hand():
    trained = {"a": torch.tensor([2.0, 4.0]), "video.temporal_embedding": torch.tensor([1.0]),
               "logit_scale": torch.tensor(4.6), "only_trained": torch.tensor([3.0]),
               "steps": torch.tensor([7])}
    init = {"a": torch.tensor([0.0, 8.0]), "video.temporal_embedding": torch.tensor([0.0]),
            "logit_scale": torch.tensor(0.0), "steps": torch.tensor([1])}
    out, info = wiseft.interpolate(trained, init, 0.25)
    assert out["a"].tolist() == [0.5, 7.0]  # 0.25 * trained + 0.75 * init
    for kept in ("video.temporal_embedding", "logit_scale", "only_trained", "steps"):
        assert torch.equal(out[kept], trained[kept])  # excluded, absent from init, or integer
    assert info == {"alpha": 0.25, "interpolated": 1,
                    "kept": ["video.temporal_embedding", "logit_scale", "only_trained", "steps"]}
    assert torch.equal(wiseft.interpolate(trained, init, 1.0)[0]["a"], trained["a"])
    assert torch.equal(wiseft.interpolate(trained, init, 0.0)[0]["a"], init["a"])
    with pytest.raises(VtkError, match=r"a \(3,\) vs \(2,\)"):
        wiseft.interpolate(trained, {"a": torch.zeros(3)}, 0.5)
    with pytest.raises(VtkError, match=r"in \[0, 1\]"):
        wiseft.interpolate(trained, init, 1.5)


def test_wise_ft_at_zero_gives_back_the_clip_init(tmp_path):
    """A CLIP-initialised model moved away from CLIP (as training does), interpolated with
    its CLIP at alpha 0: a still image embeds exactly as CLIP embeds it again."""
    from test_model import save_tiny_clip

    clip, _ = save_tiny_clip(tmp_path)
    model = build_model(dict(model="b16", init=str(tmp_path), frames=4)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.normalize(
        clip.get_image_features(pixel_values=images).pooler_output, dim=-1)
    with torch.no_grad():
        assert not torch.allclose(model.encode_video(images[:, None]), ref, atol=1e-3)
        before = model.state_dict()["video.temporal_embedding"].clone()
        info = wiseft.apply(model, init_state(str(tmp_path), model), 0.0)
        # a 1-frame video takes the temporal embedding's mean: zero it as CLIP has none
        model.video.temporal_embedding.zero_()
        assert torch.allclose(model.encode_video(images[:, None]), ref, atol=1e-5)
    assert set(info["kept"]) == {"video.temporal_embedding", "logit_scale"}
    assert not torch.equal(before, torch.zeros_like(before))  # it was kept, not interpolated
    text = [k for k in model.state_dict() if k.startswith("text.")]
    assert text and info["interpolated"] == len(model.state_dict()) - 2


def test_internvid_text_clean_up():
    assert P.clean_internvid("Can you recognize the action of Riding-a bike/unicycle?") == \
        "can you recognize the action of riding a bike unicycle"
    assert P.clean_internvid("  <person> says: \"Don't!\" (twice) ~ ok;  ") == \
        "person says dont twice ok"


def test_protocols_and_their_labels():
    plain, iv = P.resolve("plain"), P.resolve("internvid")
    assert (plain.dsl, plain.wise_ft, plain.crop, plain.clean, plain.one_caption) == \
        (False, None, "center", "none", ())
    assert (iv.dsl, iv.wise_ft, iv.crop, iv.clean, iv.one_caption) == \
        (True, 0.5, "full", "internvid", ("msrvtt",))
    assert iv.label == "internvid" and P.resolve("internvid", dsl=True).label == "internvid"
    assert P.resolve("internvid", dsl=False, wise_ft=1.0).label == \
        "internvid+dsl=False,wise_ft=1.0"
    assert P.resolve("internvid", wise_ft=False).wise_ft is None
    with pytest.raises(VtkError, match="choose one of plain, internvid"):
        P.resolve("official")


def test_plain_reports_raw_figures_even_with_dsl_and_internvid_its_dsl_ones():
    entry = {"name": "msrvtt", "task": "retrieval", "num_videos": 3, "num_texts": 3,
             "settings": {"source": "msrvtt.csv"}}
    kw = dict(frames=8, size=224, normalize="clip", max_tokens=32, model={}, seed=0, wise=None)
    for proto, want in ((P.resolve("plain", dsl=True), "raw"), (P.resolve("internvid"), "dsl"),
                        (P.resolve("internvid", dsl=False), "raw")):
        card = P.card(proto, entry, {"annotation": "msrvtt.csv"}, {}, **kw)
        assert card["scoring"]["reported"] == want, proto.label
    assert card["benchmark"]["split"] == "test 1k-A (JSFusion, one caption a video)"


def test_whole_frame_crop_keeps_the_sides():
    from vtk.data.transforms import eval_crop

    frames = torch.zeros(1, 32, 96, 3, dtype=torch.uint8)
    frames[:, :, :32] = 200  # a bright left third: outside the centre square
    centre = eval_crop(frames, 16)
    whole = eval_crop(frames, 16, whole=True)
    assert centre.max() == 0
    assert whole[0, 0, :, :4].min() > 150 and whole[0, 0, :, -4:].max() == 0


@pytest.fixture(scope="module")
def released_run(tmp_path_factory, synth_shards):
    """(official-layout tiny checkpoint, a tiny run trained 3 steps from it, bench cache)."""
    from vtk.train import train

    tmp = tmp_path_factory.mktemp("protocol")
    pth = tmp / "ViCLIP-tiny.pth"
    torch.save({"model": official_state(seed=2)}, pth)
    run = tmp / "run"
    train(dict(data=str(synth_shards), init=f"viclip:{pth}", out=str(run), batch_size=8,
               steps=3, workers=0, quiet=True, seed=0, device="cpu", cache=str(tmp / "frames")))
    return pth, run, tmp / "bench"


@needs_bpe
def test_trained_run_interpolates_with_its_init_by_hand(released_run):
    from vtk.model import released
    from vtk.train import load_run

    pth, run, _ = released_run
    model, config = load_run(run)
    assert config["init"] == f"viclip:{pth}" and config["normalize"] == "imagenet"
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    start = released.to_vtk(official_state(seed=2))
    wiseft.apply(model, init_state(config["init"], model), 0.3)
    now = model.state_dict()
    for k in ("video.encoder.layers.1.self_attn.q_proj.weight", "video.proj.weight",
              "text.backbone.encoder.layers.0.mlp.fc1.bias"):
        assert torch.allclose(now[k], 0.3 * trained[k] + 0.7 * start[k], atol=1e-7), k
    assert not torch.equal(trained["video.proj.weight"], start["video.proj.weight"])  # trained
    assert torch.equal(now["video.temporal_embedding"], trained["video.temporal_embedding"])


@needs_bpe
def test_plain_and_internvid_cards_and_numbers_on_one_run(released_run, tmp_path):
    pth, run, cache = released_run
    sims = {}
    for name in ("plain", "internvid"):
        evaluate(run, BENCHES, protocol=name, cache=cache, device="cpu",
                 save_sims=tmp_path / name)
        sims[name] = np.load(tmp_path / name / "synth-msrvtt.npy")
    result = json.loads((run / "eval.json").read_text())
    assert set(result["protocols"]) == {"plain", "internvid"}
    plain = result["protocols"]["plain"]["synth-msrvtt"]
    iv = result["protocols"]["internvid"]["synth-msrvtt"]
    assert result["benchmarks"]["synth-msrvtt"] == iv  # the latest evaluation
    pc, ic = plain["protocol"], iv["protocol"]
    assert (pc["scoring"]["wise_ft"], pc["scoring"]["reported"], pc["frames"]["crop"]) == \
        (None, "raw", "short side resized, centre square")
    assert (ic["scoring"]["wise_ft"], ic["scoring"]["reported"], ic["text"]["clean"]) == \
        (0.5, "dsl", "internvid")
    assert ic["scoring"]["wise_ft_init"] == f"viclip:{pth}"
    assert ic["scoring"]["wise_ft_kept"] == ["logit_scale", "video.temporal_embedding"]
    assert ic["text"]["captions_per_video"] == "one (the first)"
    for c in (pc, ic):
        assert c["frames"]["count"] == 8 and c["frames"]["normalize"] == "imagenet"
        assert c["model"]["checkpoint_sha256"] == pc["model"]["checkpoint_sha256"]
        assert c["benchmark"]["split"].startswith("synthetic") and c["seed"] == 0
    assert "dsl_t2v_r1" in iv["metrics"] and "dsl_t2v_r1" not in plain["metrics"]
    assert not np.allclose(sims["plain"], sims["internvid"])  # WiSE-FT moved the similarities
    k400 = result["protocols"]["internvid"]["synth-k400"]["protocol"]["text"]
    assert k400["num_templates"] == 16 and k400["template_average"] == "similarity"
    # WiSE-FT at 1 is the trained model: the plain similarities, whatever else is set
    evaluate(run, BENCHES[1:], protocol="plain", wise_ft=1.0, cache=cache, device="cpu",
             save_sims=tmp_path / "one")
    assert np.array_equal(np.load(tmp_path / "one" / "synth-msrvtt.npy"), sims["plain"])


def test_wise_ft_without_an_init_is_one_line(tmp_path, synth_shards):
    from vtk.train import train

    run = tmp_path / "scratch"
    train(dict(data=str(synth_shards), out=str(run), model="tiny", text="tiny", batch_size=8,
               steps=1, workers=0, quiet=True, device="cpu", cache=str(tmp_path / "frames")))
    with pytest.raises(VtkError, match="names no --init: pass --init"):
        evaluate(run, BENCHES[1:], protocol="internvid", cache=tmp_path / "bench", device="cpu")


@needs_bpe
def test_vtk_eval_of_a_released_checkpoint(released_run, tmp_path, capsys):
    pth, _, cache = released_run
    main(["eval", f"viclip:{pth}", "--bench", BENCHES[1], "--cache", str(cache), "--device",
          "cpu", "--protocol", "internvid", "--wise-ft", "1"])
    out = capsys.readouterr().out
    run = pth.with_name("ViCLIP-tiny-vtk")
    assert f"wrote {run / 'eval.json'}" in out and "protocol: internvid+wise_ft=1.0" in out
    entry = json.loads((run / "eval.json").read_text())["benchmarks"]["synth-msrvtt"]
    assert entry["protocol"]["model"]["name"] == "tiny"
    assert entry["protocol"]["scoring"]["wise_ft"] == 1.0


@needs_bpe
def test_wiseft_sweep_and_the_report_side_by_side(released_run, tmp_path):
    from vtk import report
    from vtk.ablate import run_wiseft

    _, run, cache = released_run
    opts = {"device": "cpu", "cache": cache}
    lines = []
    arms = run_wiseft(run, tmp_path / "sweep", ["0", "0.5", "1"], BENCHES[1:], eval_opts=opts,
                      log=lines.append)
    assert [a.name for a in arms] == ["wiseft-0-s0", "wiseft-0.5-s0", "wiseft-1-s0"]
    for arm in arms:  # the arm's own evaluation only, not the run's earlier ones
        assert set(json.loads((arm / "eval.json").read_text())["benchmarks"]) == {"synth-msrvtt"}
    run_wiseft(run, tmp_path / "sweep", ["0", "0.5", "1"], BENCHES[1:], eval_opts=opts,
               log=lines.append)
    assert sum("evaluated earlier, kept" in ln for ln in lines) == 3
    found = report.collect([tmp_path / "sweep"])
    assert [(a.kind, a.arm) for a in found] == [("wiseft", "0"), ("wiseft", "0.5"), ("wiseft", "1")]
    md = report.render_text(found, "markdown")
    assert "WiSE-FT 0 / WiSE-FT 0.5 / WiSE-FT 1" in md
    trained = json.loads((arms[2] / "eval.json").read_text())["benchmarks"]["synth-msrvtt"]
    plain = evaluate(run, BENCHES[1:], protocol="plain", write=False, **opts)
    assert trained["metrics"] == plain["benchmarks"]["synth-msrvtt"]["metrics"]

    # one run's numbers under both protocols, a table each; internvid's are its DSL figures
    evaluate(run, BENCHES[1:], protocol="internvid", **opts)
    evaluate(run, BENCHES[1:], protocol="plain", **opts)
    both = [a for a in report.collect([run.parent], ["plain", "internvid"]) if a.arm == "run"]
    assert [a.ablation for a in both] == ["runs [internvid]", "runs [plain]"]
    iv = json.loads((run / "eval.json").read_text())["protocols"]["internvid"]["synth-msrvtt"]
    assert both[0].mean("msrvtt_t2v_r1") == iv["metrics"]["dsl_t2v_r1"]
    text = report.render_text(both, "markdown")
    assert "- protocol (runs [internvid]): internvid, 8 frames (whole frame 32 px" in text
    assert "- protocol (runs [plain]): plain, 8 frames (centre 32 px" in text
