"""`vtk ablate filter`: arms parsed, scored by the none arm's model, filtered, trained at the
same step count beside a clean arm, and reported."""

from __future__ import annotations

import json

import pytest

from vtk import ablate
from vtk.errors import VtkError


def test_arm_rules_parse_and_name():
    arms = ablate.parse_arm_rules("none; top:clip-text=0.3; dedup:0.95 ;")
    assert arms == ["none", "top:clip-text=0.3", "dedup:embed:0.95"]
    assert [ablate.Arm("filter", a, 0, {}).name for a in arms] == [
        "filter-none-s0", "filter-top-clip-text-0.3-s0", "filter-dedup-embed-0.95-s0"]
    assert ablate.scores_for(arms) == (["clip-text"], True)
    assert ablate.scores_for(["none", "dedup:frames"]) == (["hashes"], False)
    with pytest.raises(VtkError, match="given twice"):
        ablate.parse_arm_rules("dedup:0.95; dedup:embed:0.95")
    with pytest.raises(VtkError):
        ablate.parse_arm_rules("top:clip-text=3")  # not a share
    with pytest.raises(VtkError, match="at least one arm"):
        ablate.parse_arm_rules(" ; ")


@pytest.fixture(scope="module")
def noisy_and_clean(tmp_path_factory):
    from vtk.cli import cli

    root = tmp_path_factory.mktemp("filter_sets")
    sets = {}
    for name, spec in (("noisy", "synth:train?n=20&noise=0.3&dups=0.1&size=32&frames=8"),
                       ("clean", "synth:train?n=20&size=32&frames=8")):
        sets[name] = root / name
        cli.main(["shard", spec, "--out", str(sets[name]), "--captions", "fine",
                  "--samples-per-shard", "8", "--workers", "1", "--quiet"],
                 standalone_mode=False)
    return sets


def test_planted_counts_the_truth(noisy_and_clean):
    assert ablate.planted(noisy_and_clean["noisy"]) == {"clips": 20, "swapped": 6,
                                                        "duplicate": 2}
    assert ablate.planted(noisy_and_clean["clean"]) == {"clips": 20, "swapped": 0,
                                                        "duplicate": 0}


@pytest.mark.slow  # four arms trained and evaluated: 40 s on a quiet machine, 160 s loaded
@pytest.mark.timeout(600)
def test_ablate_filter_end_to_end(noisy_and_clean, tmp_path, capsys):
    """Tiny settings: every arm trains the same 4 steps; the top arm keeps round(0.3 x 20) = 6
    clips chosen by the none arm's scores; the report has the filter table with its kept
    counts, the clean arm beside and the recovery line."""
    from data_helpers import run_cli

    out = tmp_path / "abl"
    args = ["ablate", "filter", str(noisy_and_clean["noisy"]), "--out", str(out),
            "--clean", str(noisy_and_clean["clean"]),
            "--rules", "none; top:clip-text=0.3; dedup:frames",
            "--model", "tiny", "--text", "tiny", "--frames", "4", "--size", "32",
            "--steps", "4", "--batch-size", "4", "--workers", "0", "--device", "cpu",
            "--bench", "synth:k400?n=12&size=32&frames=8"]
    code, err, stdout = run_cli(args, capsys)
    assert code in (0, None), err + stdout
    runs = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/ablation.json")}
    assert set(runs) == {"filter-none-s0", "filter-clean-s0", "filter-top-clip-text-0.3-s0",
                         "filter-dedup-frames-s0"}
    for name in runs:
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["steps"] == 4 and summary["complete"]
        assert "synth-k400" in json.loads((out / name / "eval.json").read_text())["benchmarks"]
    top = runs["filter-top-clip-text-0.3-s0"]
    assert top["counts"]["input"] == 20 and top["counts"]["kept"] == 6
    assert top["planted"]["clips"] == 6
    assert top["scorer"].endswith("filter-none-s0")
    assert runs["filter-none-s0"]["planted"] == {"clips": 20, "swapped": 6, "duplicate": 2}
    # the scores that chose them are the none arm's model's, beside the noisy tars
    scored = json.loads((noisy_and_clean["noisy"] / "scores" / "_summary.json").read_text())
    assert scored["model"].endswith("filter-none-s0")
    # the report: the filter table, kept counts, and the clean arm beside
    code, err, stdout = run_cli(["report", str(out), "--format", "markdown"], capsys)
    assert code in (0, None), err
    assert "| filter | none |" in stdout and "| filter | clean |" in stdout
    assert "| filter | top:clip-text=0.3 |" in stdout
    line = next(x for x in stdout.splitlines() if "| filter | top:clip-text=0.3 |" in x)
    assert "| 6 |" in line  # clips kept
    # one recovery line per filter arm (at 4 steps every arm is near chance: no gap to close)
    assert "- top:clip-text=0.3: K400 top-1" in stdout and "- dedup:frames: K400" in stdout
    # a rerun skips every arm and keeps the filtered sets
    code, err, stdout = run_cli(args, capsys)
    assert code in (0, None) and stdout.count("skipped") == 4


def test_report_filter_table_and_recovery(tmp_path):
    """The report's filter table and recovery lines from real run folders (metrics written
    as vtk eval writes them): 'top' closes 75% of the none-to-clean gap on K400."""
    from vtk import report

    def run(arm, k400, planted):
        d = tmp_path / f"filter-{ablate.slug(arm)}-s0"
        d.mkdir()
        (d / "ablation.json").write_text(json.dumps(
            {"ablation": "filter", "arm": arm, "seed": 0, "planted": planted}))
        (d / "summary.json").write_text(json.dumps(
            {"complete": True, "train_time_s": 10.0, "device": "cpu"}))
        (d / "eval.json").write_text(json.dumps({"benchmarks": {"synth-k400": {
            "task": "classification", "num_classes": 12, "metrics": {"top1": k400}}}}))

    run("none", 0.20, {"clips": 100, "swapped": 30, "duplicate": 10})
    run("clean", 0.40, {"clips": 100, "swapped": 0, "duplicate": 0})
    run("top:clip-text=0.3", 0.35, {"clips": 30, "swapped": 2, "duplicate": 3})
    arms = report.collect([tmp_path])
    assert [a.arm for a in arms] == ["none", "clean", "top:clip-text=0.3"]
    lines = report.recovery(arms)
    assert lines == ["top:clip-text=0.3: K400 top-1 35.0: recovers 75% of the gap from none "
                     "20.0 to clean 40.0; the mean of 1 benchmarks 35.0: recovers 75% of the "
                     "gap from none 20.0 to clean 40.0"]
    md = report.render_text(arms, "markdown")
    row = next(x for x in md.splitlines() if x.startswith("| filter | top:clip-text=0.3 |"))
    assert row.startswith("| filter | top:clip-text=0.3 | 1 | 30 | 2 | 3 | 35.0 (+15.0) |")
    assert "| filter | clean | 1 | 100 | 0 | 0 | 40.0 (+20.0) |" in md
    assert json.loads(report.render_text(arms, "json"))[2]["planted"]["swapped"] == 2
    assert report.plot(arms, tmp_path / "p.png").stat().st_size > 5_000


@pytest.mark.timeout(600)
def test_ablate_filter_two_arms_fast(noisy_and_clean, tmp_path, capsys):
    """The fast variant of the end-to-end run: none and top, two steps each, through the CLI;
    the top arm trains on the 6 clips the none arm's model scores highest."""
    from data_helpers import run_cli

    out = tmp_path / "abl"
    code, err, stdout = run_cli(
        ["ablate", "filter", str(noisy_and_clean["noisy"]), "--out", str(out),
         "--rules", "none; top:clip-text.fine=0.3", "--model", "tiny", "--text", "tiny",
         "--frames", "4", "--size", "32", "--steps", "2", "--batch-size", "4", "--workers", "0",
         "--device", "cpu", "--bench", "synth:k400?n=12&size=32&frames=8"], capsys)
    assert code in (0, None), err + stdout
    top = json.loads((out / "filter-top-clip-text.fine-0.3-s0" / "ablation.json").read_text())
    assert top["counts"]["kept"] == 6 and top["planted"]["clips"] == 6
    for arm in ("none", "top-clip-text.fine-0.3"):
        summary = json.loads((out / f"filter-{arm}-s0" / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["complete"]
    kept = (out / "sets" / "top-clip-text.fine-0.3" / "index.json")
    assert json.loads(kept.read_text())["num_samples"] == 6


@pytest.mark.slow  # shards two corpora and trains four arms: minutes
@pytest.mark.timeout(1200)
def test_demo_filter_quick(tmp_path):
    from click.testing import CliRunner

    from vtk.commands.demo import command

    out = tmp_path / "demo"
    res = CliRunner().invoke(command, ["--out", str(out), "--quick", "--filter", "--workers", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = json.loads((out / "report.json").read_text())
    assert {r["arm"] for r in rows if r["ablation"] == "filter"} == {
        "none", "clean", "top:clip-text=0.3", "dedup:frames"}
    noisy = next(r for r in rows if r["arm"] == "none")
    # 384 clips: round(0.3 x 384) = 115 swapped captions, round(0.1 x 384) = 38 duplicates
    assert noisy["planted"] == {"clips": 384, "swapped": 115, "duplicate": 38}
    top = next(r for r in rows if r["arm"] == "top:clip-text=0.3")
    assert top["planted"]["clips"] == 115  # round(0.3 x 384)
    assert "| filter | clean |" in (out / "report.md").read_text()
    assert json.loads((out / "demo-filter.json").read_text())["filter"] is True
