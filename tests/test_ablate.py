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
    # a rerun skips every finished arm
    res = CliRunner().invoke(command, ["--out", str(out), "--quick", "--workers", "1"])
    assert res.exit_code == 0 and res.output.count("skipped") == 7
