"""The ablation runner's plan, fingerprints, and `vtk demo --quick` end to end."""

import json

import pytest
from click.testing import CliRunner

from vtk import ablate
from vtk.errors import VtkError


def test_plan_arms_and_names():
    arms = ablate.plan("mask", ["0", "0.50", ".9"], seeds=2, base={"captions": "fine"})
    assert [a.name for a in arms] == ["mask-0-s0", "mask-0.5-s0", "mask-0.9-s0",
                                      "mask-0-s1", "mask-0.5-s1", "mask-0.9-s1"]
    assert arms[1].train == {"captions": "fine", "seed": 0, "mask": 0.5}
    caps = ablate.plan("captions", ["coarse", "both"], seeds=1, base={"mask": 0.0}, seed0=3)
    assert [(a.arm, a.train["captions"], a.seed) for a in caps] == [("coarse", "coarse", 3),
                                                                     ("both", "both", 3)]
    with pytest.raises(VtkError, match="not a masking ratio"):
        ablate.plan("mask", ["1.5"], seeds=1, base={})


def test_fingerprint_ignores_bookkeeping_only():
    a = {"data": "d", "mask": 0.0, "captions": "fine", "seed": 0, "out": "x", "workers": 2}
    b = dict(a, out="y", workers=1, resume=True)
    assert ablate.fingerprint(a) == ablate.fingerprint(b)
    assert ablate.fingerprint(a) != ablate.fingerprint(dict(a, mask=0.5))


@pytest.mark.timeout(600)
def test_demo_quick_fills_every_cell(tmp_path):
    from vtk.commands.demo import command

    out = tmp_path / "demo"
    res = CliRunner().invoke(command, ["--out", str(out), "--quick", "--workers", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = json.loads((out / "report.json").read_text())
    assert {(r["ablation"], r["arm"]) for r in rows} == {
        ("captions", "coarse"), ("captions", "fine"), ("captions", "both"),
        ("mask", "0"), ("mask", "0.5"), ("mask", "0.7"), ("mask", "0.9")}
    keys = ["k400_top1", "k600_top1", "k700_top1", "msrvtt_t2v_r1", "lsmdc_t2v_r1",
            "didemo_t2v_r1", "msvd_t2v_r1", "anet_t2v_r1", "train_time_s", "peak_mem_bytes"]
    for r in rows:
        for k in keys:
            assert isinstance(r[k], float), (r["arm"], k, r[k])
        assert r["device"].startswith("cpu") and r["seeds"] == 1
    # mask 0 with fine captions is the caption ablation's fine arm: trained once, reused
    tag = json.loads((out / "runs" / "mask-0-s0" / "ablation.json").read_text())
    assert tag["reused_from"] == "captions-fine-s0"
    assert (out / "ablations.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "| captions | fine |" in md and "| mask | 0.9 |" in md
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "scores near chance (k400 " in said and "are expected" in said
    # a rerun skips every finished arm
    res = CliRunner().invoke(command, ["--out", str(out), "--quick", "--workers", "1"])
    assert res.exit_code == 0 and res.output.count("skipped") == 7


def test_interrupted_arm_resumes_and_changed_settings_retrain(synth_shards, tmp_path):
    """A stopped arm is never evaluated as if finished; new settings are never skipped."""
    base = dict(data=str(synth_shards), model="tiny", text="tiny", frames=4, size=32,
                batch_size=8, workers=0, device="cpu", quiet=True, captions="txt")
    benches = ["synth:k400?n=12&size=32"]
    eval_opts = {"device": "cpu", "cache": str(tmp_path / "bench")}
    lines = []

    def go(**kw):
        arms = ablate.plan("mask", ["0.5"], seeds=1, base=dict(base, **kw))
        return ablate.run_arms(arms, tmp_path / "out", benches, eval_opts, log=lines.append)

    with pytest.raises(VtkError, match="stopped before its last step"):
        go(steps=6, stop_after=3)  # a preempted run: checkpoint at step 3, summary incomplete
    run = tmp_path / "out" / "mask-0.5-s0"
    assert not ablate.trained(run) and not (run / "eval.json").exists()
    go(steps=6)
    assert any("training (resuming)" in line for line in lines)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["steps"] == 6 and (run / "eval.json").exists()
    lines.clear()
    go(steps=6)
    assert any("skipped" in line for line in lines)
    lines.clear()
    go(steps=8)
    assert any("other settings: training it again" in line for line in lines)
    assert json.loads((run / "summary.json").read_text())["steps"] == 8


def test_quick_demo_says_chance_is_the_expected_result():
    from vtk.commands.demo import quick_note
    from vtk.report import Arm

    arm = Arm("mask", "0", chance={"k400_top1": 0.1, "msrvtt_t2v_r1": 0.025,
                                   "msrvtt_v2t_r1": 0.025})
    note = quick_note([arm], 30)
    assert note.startswith("--quick trains 30 steps per arm: scores near chance "
                           "(k400 10.0%, msrvtt 2.5%) are expected")
