"""`vtk view DIR --static OUT`: the viewer's page as plain files, for up to N clips.

OUT holds the page (index.html, view.js, view.css), ``data.js`` (the rows, the card and the
failures as one JavaScript value, so the page works opened from disk, where a browser refuses
``fetch`` of local files) and the members it shows: ``media/<tar>/<row>.mp4`` (the mp4 members,
copied byte for byte) and ``poster/<tar>/<row>.jpg``. The URLs in the rows are the server's, so
one script serves both; filters, sorting and paging run in the page over the exported rows.
"""

from __future__ import annotations

import json
import os

from vtk.errors import VtkError
from vtk.view.index import MAX_LIMIT, ShardSetView
from vtk.view.members import MemberError, poster_jpeg
from vtk.view.server import static_files


def js_value(value) -> str:
    """JSON that is also safe inside a script: no ``</script>``, no U+2028 line breaks."""
    text = json.dumps(value, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def export_static(view: ShardSetView, out: str, limit: int = 200, progress=None) -> dict:
    """Write the page for the first ``limit`` rows (shard order) to ``out``; returns counts.
    ``progress(iterable, total)`` wraps the per-clip loop (a rich bar from the CLI)."""
    if limit < 1:
        raise VtkError(f"--limit {limit}: give at least 1")
    if os.path.exists(out) and not os.path.isdir(out):
        raise VtkError(f"{out}: exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, "data.js")):
        raise VtkError(f"{out}: not empty and not an earlier vtk view export; choose another "
                       f"folder")
    rows: list[dict] = []
    while len(rows) < limit:
        page = view.query(offset=len(rows), limit=min(MAX_LIMIT, limit - len(rows)))
        rows += page["items"]
        if not page["items"]:
            break
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise VtkError(f"cannot write the page to {out}: {e.strerror or e}") from None
    clips = 0
    for item in progress(rows, len(rows)) if progress else rows:
        if not item.get("mp4"):
            continue
        try:
            mp4 = view.read(item["shard"], item["row"], "mp4")
        except (OSError, MemberError) as e:
            mp4, item["error"] = None, f"{item['key']}: mp4 unreadable ({e})"
        if mp4 is None:
            item.pop("mp4"), item.pop("poster")
            continue
        _write(out, ("media", item["shard"], f"{item['row']}.mp4"), mp4)
        try:
            _write(out, ("poster", item["shard"], f"{item['row']}.jpg"), poster_jpeg(mp4))
        except Exception:  # a clip that does not decode is still shown, without a poster
            item.pop("poster")
        clips += 1
    summary = view.summary()
    summary["exported"] = len(rows)
    data = {"summary": summary, "clips": rows, "failures": view.failures(),
            "labels": sorted({str(r["label"]) for r in rows if r.get("label") is not None}),
            "scores": sorted({k for r in rows if isinstance(r.get("scores"), dict)
                              for k in r["scores"]})}
    for name, body in static_files().items():
        _write(out, (name,), body)
    _write(out, ("data.js",), f"window.VTK_DATA = {js_value(data)};\n".encode())
    return {"rows": len(rows), "clips": clips, "of": view.total(), "out": out}


def _write(out: str, parts: tuple[str, ...], data: bytes) -> None:
    # parts are a tar's name from the folder listing and a row number: no separators, no '..'
    path = os.path.join(out, *parts)
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:  # a read-only or full folder: one line, no half file left
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise VtkError(f"cannot write the page to {out}: {e.strerror or e} ({path})") from None
