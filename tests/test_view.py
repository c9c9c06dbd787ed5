"""vtk view: the lazy index of a shard set, the server's routes and what it refuses, the static
export, and the page in a real headless browser (Debian's chromium and chromedriver through
selenium; nothing downloads a browser). The browser tests skip where chromium, chromedriver or
selenium is missing, except where VTK_VIEW_BROWSER=required (CI's `.ci/run` sets it after
installing chromium), where that fails. The browser tests are marked `view`.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from data_helpers import encode, pattern_frames, write_shards

from vtk.errors import VtkError
from vtk.shards.wds_index import format_index, read_index
from vtk.shards.writer import ShardWriter
from vtk.view.index import ShardSetView
from vtk.view.server import start_in_thread

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="window.__pwned = 1">'


def shard_cli(*args) -> None:
    from vtk.cli import cli

    cli.main([*map(str, args)], standalone_mode=False)


@pytest.fixture(scope="module")
def real_set(tmp_path_factory) -> Path:
    """`vtk shard synth:train?n=12 --captions both`: 12 real H.264 clips with every caption."""
    out = tmp_path_factory.mktemp("view") / "synth"
    shard_cli("shard", "synth:train?n=12", "--out", out, "--captions", "both", "--workers", "1",
              "--quiet")
    return out


def member(folder: Path, file: str, name: str) -> bytes:
    import tarfile

    with tarfile.open(folder / file) as tar:
        return tar.extractfile(name).read()


def meta(i: int, **over) -> dict:
    info = {"source": f"videos/v{i}.mp4", "source_id": f"v{i}", "clip": 0, "start": 1.0 * i,
            "end": 1.0 * i + 1.5, "fps": 8.0, "num_frames": 12, "width": 64, "height": 48,
            "codec": "h264", "caption_models": {},
            "captions": {"coarse": f"a dog {i}", "fine": f"the dog runs {i}",
                         "fused": f"a dog {i}. the dog runs {i}",
                         "frames": [{"t": 0.0, "text": f"a dog sits {i}"},
                                    {"t": 0.75, "text": f"a dog jumps {i}"}]},
            "label": "dogs" if i % 2 else "cats", "scores": {"umt": i / 10}}
    info.update(over)
    return info


def write_set(folder: Path, infos: list[dict], per_shard: int = 4, mp4: bytes | None = None):
    """A shard set written by ShardWriter (tars, .idx, stats, index.json) from json dicts."""
    mp4 = mp4 or encode(pattern_frames(12))
    writer = ShardWriter(str(folder), samples_per_shard=per_shard)
    for i, info in enumerate(infos):
        writer.add({"__key__": f"{info['source_id']}_{i:06d}", "mp4": mp4, "txt": "", "json": info})
        writer.source_done(info["source_id"])
    writer.fail("gone", "videos/gone.mp4", "not-found", "no such file")
    writer.fail("bad", "videos/bad.mp4", "decode-error", "Invalid data <b>found</b>")
    writer.close()
    return folder


@pytest.fixture(scope="module")
def hostile_set(tmp_path_factory) -> Path:
    """Captions and fields that are markup, a corrupt tar, and symlinks that lead out."""
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "set"
    infos = [meta(0, captions={"coarse": SCRIPT, "fine": IMG, "fused": SCRIPT + IMG,
                               "frames": [{"t": 0.0, "text": SCRIPT}]},
                  label="<b>bold</b>", extra={"note": IMG}),
             meta(1), meta(2), meta(3)]
    write_set(folder, infos)
    (folder / "shard-000001.tar").write_bytes(b"this is not a tar" * 100)  # corrupt, no .idx
    (root / "secret.txt").write_text("secret")
    outside = root / "outside.tar"
    shutil.copy(folder / "shard-000000.tar", outside)  # a valid tar, but not in the folder
    os.symlink(outside, folder / "outside.tar")
    os.symlink(root / "secret.txt", folder / "leak.idx")
    os.symlink(root / "secret.txt", folder / "stats" / "leak.json")
    return folder


@pytest.fixture
def server(request):
    servers = []

    def start(folder):
        servers.append(start_in_thread(str(folder)))
        return servers[-1]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def get(srv, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """A raw request: http.client sends the path exactly as given (no normalising)."""
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", (headers or {}).pop("Host", f"{host}:{port}"))
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def api(srv, path: str) -> dict:
    status, _, body = get(srv, path)
    assert status == 200, body
    return json.loads(body)


# --- the index ----------------------------------------------------------------------------


def test_opening_reads_only_the_idx_headers_and_a_page_only_its_shards(tmp_path):
    folder = write_set(tmp_path / "set", [meta(i) for i in range(20)], per_shard=4)
    for i in (3, 4):  # later tars destroyed (their .idx kept): opening must not notice
        tar = folder / f"shard-00000{i}.tar"
        tar.write_bytes(b"\0" * tar.stat().st_size)  # the size an .idx's count is held to
    view = ShardSetView(str(folder))
    assert view.total() == 20 and view.listed_shards() == []
    page = view.query(offset=0, limit=4)
    assert [r["key"] for r in page["items"]] == [f"v{i}_{i:06d}" for i in range(4)]
    assert view.listed_shards() == [0]
    page = view.query(offset=9, limit=2)
    assert [r["start"] for r in page["items"]] == [9.0, 10.0]
    assert view.listed_shards() == [0, 2]
    last = view.query(offset=16, limit=10)["items"]  # shard 4: one error row, not a crash
    assert len(last) == 1 and "shard-000004.tar" in last[0]["error"]


def test_filters_sort_and_paging(tmp_path):
    infos = [meta(i) for i in range(10)]
    infos[3]["captions"]["frames"][1]["text"] = "a Zebra crosses"
    del infos[5]["scores"]
    view = ShardSetView(str(write_set(tmp_path / "set", infos, per_shard=3)))
    assert view.query(q="zebra")["total"] == 1
    assert view.query(q="zebra")["items"][0]["key"] == "v3_000003"
    assert view.query(q="dog runs 7")["total"] == 1  # every word, in any caption
    assert view.query(q="dog cat")["total"] == 0
    assert view.query(label="DOGS")["total"] == 5
    desc = view.query(sort="umt", limit=20)["items"]
    assert [r["scores"]["umt"] for r in desc[:3]] == [0.9, 0.8, 0.7]
    assert desc[-1]["key"] == "v5_000005"  # no score: last
    asc = view.query(sort="umt", order="asc", offset=2, limit=2)
    assert [r["scores"]["umt"] for r in asc["items"]] == [0.2, 0.3] and asc["total"] == 10
    assert view.query(q="dog", label="cats", sort="umt", limit=2)["total"] == 5
    assert "umt" in view.query()["scores"] and "dogs" in view.query()["labels"]
    # caches past their bounds: shards dropped and read again, the same answers
    tight = ShardSetView(view.folder, listing_cache=1, facet_budget=1)
    for query in ({"q": "zebra"}, {"sort": "umt", "limit": 20}, {"offset": 7, "limit": 3}):
        assert tight.query(**query)["items"] == view.query(**query)["items"]
    assert len(tight.listed_shards()) == 1 and len(tight._facets.keys()) == 1


def test_a_stale_idx_is_not_trusted(tmp_path):
    folder = write_set(tmp_path / "set", [meta(i) for i in range(6)], per_shard=3)
    idx = folder / "shard-000000.idx"  # the right count, every offset one block off
    idx.write_text(format_index([[(e, o + 512, n, name) for e, o, n, name in sample]
                                 for sample in read_index(str(idx))]))
    (folder / "shard-000001.idx").write_text("v1.2 3\n" + "mp4 9999999 10 x.mp4\n" * 3)
    view = ShardSetView(str(folder))
    rows = view.query(limit=10)["items"]
    assert [r.get("start") for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # from tar headers
    mp4 = view.read("shard-000000.tar", 1)
    assert mp4 == member(folder, "shard-000000.tar", "v1_000001.mp4")


def test_a_tar_cut_short_keeps_its_readable_samples(tmp_path):
    folder = write_set(tmp_path / "set", [meta(i) for i in range(4)], per_shard=4)
    tar = folder / "shard-000000.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) * 2 // 3])
    rows = ShardSetView(str(folder)).query(limit=10)["items"]
    good = [r for r in rows if "error" not in r]
    assert 1 <= len(good) < 4 and "cut short" in rows[-1]["error"]
    assert [r["start"] for r in good] == [float(i) for i in range(len(good))]


def test_tars_without_idx_are_read_from_their_headers(tmp_path):
    write_shards(tmp_path, samples=5, per_shard=2)  # webdataset's TarWriter: no .idx, no card
    view = ShardSetView(str(tmp_path))
    rows = view.query(limit=10)["items"]
    assert view.total() == 5 and [r["source"] for r in rows] == [f"src{i}" for i in range(5)]
    assert view.query(label="class1")["total"] == 2


def test_an_idx_header_cannot_claim_more_rows_than_its_tar_holds(tmp_path):
    folder = write_set(tmp_path / "set", [meta(i) for i in range(6)], per_shard=3)
    idx = folder / "shard-000000.idx"
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join(["v1.2 1000000000", *lines[1:]]) + "\n")
    view = ShardSetView(str(folder))
    assert view.total() == 6  # the startup line's count: the headers' 3, not a billion
    assert [r["key"] for r in view.query(limit=10)["items"]][:3] == [
        f"v{i}_{i:06d}" for i in range(3)]


# --- the server ---------------------------------------------------------------------------


def test_members_and_posters_come_straight_from_the_tar(real_set, server):
    srv = server(real_set)
    page = api(srv, "/api/clips?limit=5")
    assert page["total"] == 12 and len(page["items"]) == 5
    item = page["items"][2]
    want = member(real_set, item["shard"], item["key"] + ".mp4")
    status, headers, body = get(srv, "/" + item["mp4"])
    assert status == 200 and body == want and headers["Content-Type"] == "video/mp4"
    status, headers, body = get(srv, "/" + item["mp4"], {"Range": "bytes=100-199"})
    assert status == 206 and body == want[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(want)}"
    status, _, body = get(srv, "/" + item["mp4"], {"Range": "bytes=-50"})
    assert status == 206 and body == want[-50:]
    status, headers, jpeg = get(srv, "/" + item["poster"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    poster = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    with av.open(io.BytesIO(want)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert poster.shape == frames[0].shape
    diffs = [np.abs(poster.astype(float) - f).mean() for f in frames]
    assert int(np.argmin(diffs)) == len(frames) // 2  # the middle frame, JPEG noise aside


@pytest.mark.parametrize("path", [
    "/../index.json",
    "/files/../index.json",
    "/files/../../secret.txt",
    "/files/%2e%2e/secret.txt",
    "/files/stats/../../secret.txt",
    "/files//etc/passwd",
    "/files/%2Fetc%2Fpasswd",
    "//etc/passwd",
    "/media/..%2Fsecret.txt/0.mp4",
    "/media/%2Fetc%2Fpasswd/0.mp4",
    "/files/leak.idx",              # a symlink out of the folder
    "/files/stats/leak.json",       # the same, under stats/
    "/files/outside.tar",           # a symlinked tar out of the folder
    "/media/outside.tar/0.mp4",
    "/poster/outside.tar/0.jpg",
    "/files/.caption-cache",
    "/files/shard-000000.tar.tmp",
])
def test_only_the_sets_own_files_are_served(hostile_set, server, path):
    srv = server(hostile_set)
    status, _, body = get(srv, path)
    assert status == 404, (path, body[:80])
    assert b"secret" not in body and b"root:" not in body


def test_the_sets_files_and_a_loopback_host_check(hostile_set, server):
    srv = server(hostile_set)
    assert get(srv, "/files/index.json")[0] == 200
    assert get(srv, "/files/stats/shard-000000.json")[0] == 200
    status, _, body = get(srv, "/files/shard-000000.idx")
    assert status == 200 and body == (hostile_set / "shard-000000.idx").read_bytes()
    assert get(srv, "/api/card", {"Host": "attacker.example"})[0] == 403  # DNS rebinding
    _, headers, _ = get(srv, "/")
    assert "script-src" not in headers["Content-Security-Policy"]  # 'self' only: no inline
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_corrupt_tar_is_an_error_row_and_the_server_keeps_serving(hostile_set, server):
    srv = server(hostile_set)
    rows = api(srv, "/api/clips?limit=50")["items"]
    errors = {r["shard"]: r["error"] for r in rows if "error" in r}
    assert "unreadable tar" in errors["shard-000001.tar"]
    assert "symlink out of the folder" in errors["outside.tar"]
    assert sum("error" not in r for r in rows) == 4
    clip = next(r for r in rows if "error" not in r)
    status, _, body = get(srv, "/" + clip["mp4"])  # still serving
    assert status == 200 and body[4:8] == b"ftyp"
    assert get(srv, "/media/shard-000001.tar/0.mp4")[0] == 404
    fails = api(srv, "/api/failures")
    # stats/leak.json, a symlink out, is reported as not read
    assert fails["by_reason"] == {"decode-error": 1, "not-found": 1, "stats-unreadable": 1}
    assert api(srv, "/api/failures?reason=not-found")["items"][0]["input"] == "videos/gone.mp4"
    assert get(srv, "/api/clips?offset=x")[0] == 400


def test_cli_refuses_a_busy_port_and_a_folder_without_shards(tmp_path, real_set):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(VtkError, match="in use"):
            shard_cli("view", real_set, "--port", s.getsockname()[1])
    with pytest.raises(VtkError, match="no .tar shards"):
        shard_cli("view", tmp_path)


def test_static_export(real_set, tmp_path):
    out = tmp_path / "site"
    shard_cli("view", real_set, "--static", out, "--limit", "5", "--quiet")
    text = (out / "data.js").read_text()
    data = json.loads(text.removeprefix("window.VTK_DATA = ").removesuffix(";\n"))
    assert len(data["clips"]) == 5 and data["summary"]["total"] == 12
    clip = data["clips"][4]
    assert (out / clip["mp4"]).read_bytes() == member(real_set, clip["shard"], clip["key"] + ".mp4")
    assert cv2.imread(str(out / clip["poster"])).shape[:2] == (clip["height"], clip["width"])
    assert {p.name for p in out.iterdir()} == {"index.html", "view.js", "view.css", "data.js",
                                              "media", "poster"}
    (out / "extra.txt").write_text("x")
    shard_cli("view", real_set, "--static", out, "--limit", "2", "--quiet")  # an export: reused
    with pytest.raises(VtkError, match="not empty"):
        shard_cli("view", real_set, "--static", real_set)


def test_static_data_cannot_close_its_script(hostile_set, tmp_path):
    shard_cli("view", hostile_set, "--static", tmp_path / "site", "--quiet")
    text = (tmp_path / "site" / "data.js").read_text()
    clips = json.loads(text[len("window.VTK_DATA = "):-2])["clips"]
    assert "<" not in text and SCRIPT in [c.get("captions", {}).get("coarse") for c in clips]


# --- the page in a real browser -----------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    required = os.environ.get("VTK_VIEW_BROWSER") == "required"
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install 'vtk-videotext[browser-tests]')")
    if missing:
        (pytest.fail if required else pytest.skip)(
            f"needs {', '.join(missing)} (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="vtk-view-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # an explicit driver path: selenium-manager (which downloads browsers) is never run
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(driver, condition, timeout: float = 15):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))


def clip_count(driver) -> int:
    return driver.execute_script("return document.querySelectorAll('#grid article.clip').length")


@pytest.mark.view
def test_page_grid_playback_and_text_filter(real_set, server, browser):
    srv = server(real_set)
    browser.get(srv.url)
    wait(browser, lambda d: clip_count(d) == 12)
    assert browser.find_element("id", "range").text == "1–12 of 12"
    played = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const v = document.querySelector('#grid video');
        const t0 = v.currentTime;
        v.play().then(() => setTimeout(() => done([t0, v.currentTime, v.paused, v.muted]), 1200),
                      (e) => done(['error', String(e)]));""")
    assert played[0] == 0 and played[1] > 0.3 and played[3] is True, played
    view = ShardSetView(str(real_set))
    want = view.query(q="circle", limit=50)["total"]
    assert 0 < want < 12
    box = browser.find_element("id", "q")
    box.send_keys("circle")
    wait(browser, lambda d: clip_count(d) == want)
    texts = [e.text.lower() for e in browser.find_elements("css selector", "#grid article.clip")]
    assert all("circle" in t for t in texts)
    box.clear()
    box.send_keys("circle zzz-nothing")
    wait(browser, lambda d: clip_count(d) == 0)


@pytest.mark.view
def test_page_shows_markup_as_text(hostile_set, server, browser):
    from selenium.common.exceptions import NoAlertPresentException

    srv = server(hostile_set)
    browser.get(srv.url)
    wait(browser, lambda d: clip_count(d) == 6)  # 4 clips, the corrupt tar, the symlinked tar
    first = browser.find_element("css selector", "#grid article.clip:not(.error)")
    assert first.find_element("css selector", ".cap-coarse").text == SCRIPT
    assert first.find_element("css selector", ".cap-fine").text == IMG
    assert first.find_element("css selector", ".frame-text").text == SCRIPT
    assert first.find_element("css selector", ".tag.label").text == "<b>bold</b>"
    assert IMG in first.text  # the manifest field
    assert browser.execute_script(
        "return [window.__pwned, document.querySelectorAll('#grid img, #grid script, #grid b,"
        " #failures b').length]") == [None, 0]
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text
    errors = browser.find_elements("css selector", "#grid article.clip.error")
    assert any("shard-000001.tar" in e.text for e in errors)
    wait(browser, lambda d: "Invalid data <b>found</b>" in d.find_element("id", "failures").text)


@pytest.mark.view
def test_static_page_filters_without_a_server(real_set, tmp_path, browser):
    out = tmp_path / "site"
    shard_cli("view", real_set, "--static", out, "--limit", "8", "--quiet")
    browser.get((out / "index.html").as_uri())
    wait(browser, lambda d: clip_count(d) == 8)
    want = sum("circle" in json.dumps(c["captions"]).lower() for c in json.loads(
        (out / "data.js").read_text()[len("window.VTK_DATA = "):-2])["clips"])
    browser.find_element("id", "q").send_keys("circle")
    wait(browser, lambda d: clip_count(d) == want)
    assert browser.execute_script("return document.querySelector('#grid video').readyState") >= 1


# --- what a hostile folder or client cannot do: hang a request, hold a thread, get a 500 ----


def test_a_fifo_in_stats_is_reported_and_never_opened_for_reading(tmp_path, server):
    folder = write_set(tmp_path / "set", [meta(i) for i in range(4)])
    os.mkfifo(folder / "stats" / "zz-fifo.json")  # a plain open() of it waits for a writer
    srv = server(folder)
    status, _, body = get(srv, "/api/failures")
    assert status == 200
    fails = json.loads(body)
    assert fails["by_reason"] == {"decode-error": 1, "not-found": 1, "stats-unreadable": 1}
    assert "not a regular file" in [r for r in fails["items"]
                                    if r["kind"] == "stats-unreadable"][0]["reason"]
    assert get(srv, "/api/card")[0] == 200  # the lock was not held
    shard_cli("view", folder, "--static", tmp_path / "site", "--quiet")  # nor the export
    assert (tmp_path / "site" / "data.js").is_file()


def test_a_tar_cut_short_while_served_never_leaves_a_client_waiting(tmp_path, server):
    """/media/: a member the tar no longer holds is an error, not a short 200 that a
    keep-alive client waits on for ever; /files/: a tar cut while it is sent ends its
    connection, so the client sees it short at once."""
    folder = write_set(tmp_path / "set", [meta(i) for i in range(4)])
    srv = server(folder)
    rows = api(srv, "/api/clips?limit=10")["items"]  # the listing (offsets) is cached now
    tar = folder / "shard-000000.tar"
    last = rows[3]
    mp4 = next(m for m in read_index(str(folder / "shard-000000.idx"))[3] if m[0] == "mp4")
    os.truncate(tar, mp4[1] + mp4[2] // 2)  # half way into the last sample's mp4
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=5)  # one keep-alive connection
    try:
        conn.request("GET", "/" + last["mp4"])
        r = conn.getresponse()
        body = r.read()
        assert r.status == 500 and b"ends before" in body
        conn.request("GET", "/" + rows[0]["mp4"], headers={"Range": "bytes=0-99"})
        r = conn.getresponse()
        assert r.status == 206 and len(r.read()) == 100  # the connection still serves
    finally:
        conn.close()
    big = folder / "big.tar"  # 256 MB, sparse: cut while the server is sending it
    with open(big, "wb") as f:
        f.truncate(256 * 2**20)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/files/big.tar")
        r = conn.getresponse()
        assert r.status == 200 and int(r.headers["Content-Length"]) == 256 * 2**20
        got = len(r.read(2**20))
        os.truncate(big, 2 * 2**20)
        while chunk := r.read(2**20):  # ends at the closed connection (no 5 s timeout)
            got += len(chunk)
        assert got < 256 * 2**20
    finally:
        conn.close()


def test_idle_connections_are_closed(real_set, server):
    srv = server(real_set)
    srv.idle_timeout = 0.5
    with socket.create_connection(srv.server_address[:2], timeout=10) as s:
        assert s.recv(1) == b""  # closed by the server, long before our 10 s
    status, _, _ = get(srv, "/api/card")
    assert status == 200


@pytest.mark.parametrize("path,headers", [
    ("/media/shard-000000.tar/" + "9" * 5000 + ".mp4", {}),
    ("/poster/shard-000000.tar/" + "1" * 5000 + ".jpg", {}),
    ("/media/shard-000000.tar/0.mp4", {"Range": "bytes=" + "9" * 5000 + "-"}),
])
def test_numbers_of_thousands_of_digits_are_no_server_error(real_set, server, path, headers):
    srv = server(real_set)
    status, _, _ = get(srv, path, dict(headers))
    assert status in (200, 400, 404, 416)


def test_a_static_export_that_cannot_be_written_is_one_line(real_set, tmp_path):
    """A full disk (the page's first file a link to /dev/full, for root too) and, as a user
    other than root, a read-only folder: one line naming the folder, no traceback."""
    from data_helpers import unwritable_folders

    # data.js: an earlier export, written over; its page's first file goes to /dev/full
    for out in unwritable_folders(tmp_path, "index.html.tmp", earlier="data.js"):
        with pytest.raises(VtkError, match=f"cannot write the page to {out}"):
            shard_cli("view", real_set, "--static", out, "--limit", "2", "--quiet")
