"""`vtk bench captions` and `vtk bench caption-quality` on a few synthetic clips: help, the
table, and the JSON rows / report."""

import json

import pytest
from click.testing import CliRunner

from vtk.cli import cli


@pytest.mark.parametrize("name", ["captions", "caption-quality"])
def test_help(name):
    res = CliRunner().invoke(cli, ["bench", name, "--help"])
    assert res.exit_code == 0, res.output
    assert "--json" in res.output and "--fine-fps" in res.output


def test_bench_captions_one_row_per_model():
    args = ["bench", "captions", "--models", "shapes", "--clips", "3", "--batch", "2",
            "--size", "32"]
    rows = json.loads(CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False).output)
    assert [r["model"] for r in rows] == ["shapes"]
    r = rows[0]
    assert r["clips"] == 3 and r["errors"] == 0 and r["mode"] == "both"
    assert r["clips_per_s"] > 0 and r["frames_per_clip"] > 1 and r["example"]
    table = CliRunner().invoke(cli, [*args, "--mode", "coarse"], catch_exceptions=False).output
    assert "clips/s" in table.splitlines()[0] and table.splitlines()[1].startswith("shapes")


def test_caption_quality_report():
    args = ["bench", "caption-quality", "--n", "8", "--seed", "3", "--size", "32"]
    report = json.loads(CliRunner().invoke(cli, [*args, "--json"],
                                           catch_exceptions=False).output)
    assert report["clips"] == 8 and report["seed"] == 3 and report["size"] == 32
    assert report["errors"] == 0
    assert 0 <= report["frames"]["detection"] <= 1 and 0 <= report["motion"]["action"] <= 1
    assert set(report["leakage"]) >= {"coarse", "fine"}
    text = CliRunner().invoke(cli, args, catch_exceptions=False).output
    assert "shapes on 8 synthetic clips" in text and "action from fine captions" in text
