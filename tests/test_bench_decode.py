"""`vtk bench decode` end to end on a tiny real shard set: the table and the JSON rows."""

import json

from vtk.cli import main

KEYS = {"backend", "clips_per_s", "frames_per_s", "cpu_ms_per_clip", "ceiling_clips_per_s",
        "ratio", "workers", "load_before", "load_after"}


def test_bench_decode_writes_one_row_per_backend(synth_shards, tmp_path, capsys):
    out = tmp_path / "dec.json"
    main(["bench", "decode", str(synth_shards), "--backends", "pyav,cache", "--workers", "1",
          "--size", "32", "--frames", "4", "--min-clips", "24", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["pyav", "cache"]
    for r in rows:
        assert KEYS <= set(r) and r["workers"] == 1 and len(r["load_before"]) == 3
        assert r["clips_per_s"] > 0 and abs(r["frames_per_s"] - 4 * r["clips_per_s"]) < 1
    assert rows[0]["ceiling_clips_per_s"] > 0 and rows[0]["ratio"] > 0
    assert rows[1]["ceiling_clips_per_s"] is None  # the cache has no decode to compare with
    assert "clips/s" in capsys.readouterr().out


def test_an_uninstalled_backend_is_skipped_not_fatal(synth_shards, tmp_path, capsys):
    out = tmp_path / "dec.json"
    main(["bench", "decode", str(synth_shards), "--backends", "pyav,nope", "--workers", "0",
          "--size", "16", "--frames", "2", "--min-clips", "1", "--json", str(out)])
    assert [r["backend"] for r in json.loads(out.read_text())] == ["pyav"]
    assert "skipped nope" in capsys.readouterr().err
