"""One long video across several workers: keyframe-aligned parts, cut as one pass would cut.

A single source keeps one worker busy (a decode thread and the cutter beside it), however
many cores the machine has. So a long file cut into scenes is split into ``parts`` ranges of
frames that begin at keyframes, and each range goes to a worker of its own. The cuts must be
the frames a single pass over the file finds, and PySceneDetect's ``ContentDetector`` is
stateful: a frame's score compares it with the frame before, and its decision (the score
against the threshold, then the flash filter's ``min_scene_len``) depends on the cuts before.

How the parts stay one pass:

- **Overlap.** A part's worker starts decoding at a keyframe at least ``min_scene_len`` frames
  before its range, so its first score compares real neighbours and its detector has seen
  the frames before the range (a frame decoded from any keyframe is the same frame: closed
  GOPs, and an open GOP's leading pictures are dropped). It owns the scenes that *start* in its
  range; the scene running at the range's end it follows past the end, to its cut. Frames are
  numbered and timed from the file's first frame (constant frame rate: checked by the plan).
- **Reconcile.** Each worker reports every frame's score and the cuts it made. The parent
  replays the detector over all scores in order (``replay_cuts``: the scores are exact, so
  these are the single pass's cuts) and accepts a part's clips only where its own cuts are
  those cuts (``agrees``). A part whose detector had not caught up with the file's state at
  its range's start would differ there; the caller then cuts the source in one pass.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

MIN_PART_S = 60.0  # seconds of video per part at least: below that the overlap costs too much


@dataclass(frozen=True)
class Segment:
    part: int
    parts: int
    start: int  # first source frame whose scenes this part owns
    stop: int  # the next part's start (the file's frame count for the last part)
    warm: int  # the keyframe this part decodes from (at or before start - the overlap)
    warm_pts: int  # its pts, to seek to
    pts0: int  # pts of the file's first frame
    tick: int  # pts per frame (constant frame rate)
    t0: float  # time (s) of the file's first frame, as the single pass computes it
    frames: int  # frames in the file

    @property
    def last(self) -> bool:
        return self.part == self.parts - 1


def plan(path: str, parts: int, overlap: int, min_part_s: float | None = None) -> list | None:
    """Keyframe-aligned parts of a video file, or None when it is not worth splitting (too
    short, fewer keyframes than parts) or cannot be split exactly (no constant frame rate).
    Reads the packets' headers only (demuxing, no decoding), plus one frame."""
    import av

    from vtk.clips.decode import open_video

    if parts < 2:
        return None
    min_part_s = MIN_PART_S if min_part_s is None else min_part_s
    container, stream = open_video(path)
    try:
        packets = [(p.pts, bool(p.is_keyframe)) for p in container.demux(stream)
                   if p.pts is not None]
        pts = sorted(p for p, _ in packets)
        rate = float(stream.average_rate or 0)
        if len(pts) < 2 or not rate or len(pts) / rate < parts * min_part_s:
            return None
        tick = pts[1] - pts[0]
        if tick <= 0 or any(b - a != tick for a, b in zip(pts, pts[1:])):
            return None  # not a constant frame rate: frames could not be numbered by time
        keys = sorted((p - pts[0]) // tick for p, k in packets if k)
        container.seek(pts[0], stream=stream, backward=True)
        first = next(container.decode(stream))
        tb = stream.time_base
        origin = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        t0 = float(first.time) - origin
    except (av.error.FFmpegError, StopIteration, ValueError):
        return None
    finally:
        container.close()
    n = len(pts)
    starts = [0]
    for j in range(1, parts):  # the keyframe nearest each even split
        want = n * j // parts
        i = bisect.bisect_left(keys, want)
        near = min(keys[max(i - 1, 0):i + 1], key=lambda k: abs(k - want), default=None)
        if near is not None and near > starts[-1] + overlap:
            starts.append(near)
    if len(starts) < 2:
        return None
    out = []
    for k, s in enumerate(starts):
        warm = keys[max(bisect.bisect_right(keys, s - 1 - overlap) - 1, 0)] if s else 0
        out.append(Segment(k, len(starts), s, starts[k + 1] if k + 1 < len(starts) else n,
                           warm, pts[0] + warm * tick, pts[0], tick, t0, n))
    return out


def replay_cuts(scores, threshold: float, min_scene_len: int, fps: float) -> list[int]:
    """The cuts (frame numbers) ``ContentDetector`` makes over a file whose frames score
    ``scores`` (frame 0 scores 0: nothing before it), with the post-processing at its end:
    the detector's own decision logic, fed the scores instead of frames."""
    from scenedetect import FrameTimecode
    from scenedetect.detectors import ContentDetector

    class Replay(ContentDetector):
        def _calculate_frame_score(self, timecode, frame_img):
            return float(scores[timecode.frame_num])

    det = Replay(threshold=threshold, min_scene_len=min_scene_len)
    cuts = []
    for i in range(len(scores)):
        cuts += det.process_frame(FrameTimecode(i, fps=fps), None)
    cuts += det.post_process(FrameTimecode(max(len(scores) - 1, 0), fps=fps))
    return [c.frame_num for c in cuts]


def global_scores(segs: list[Segment], reports: list[dict]):
    """Every frame's score from the parts' reports (frame 0 scores 0), or None when a frame
    has none, or two parts scored one frame differently (they did not decode the same
    frame)."""
    import numpy as np

    scores = np.full(segs[0].frames, np.nan)
    for rep in reports:
        vals = np.asarray(rep["scores"], dtype=np.float64)
        span = scores[rep["first"]:rep["first"] + len(vals)]
        vals = vals[:len(span)]
        seen = ~np.isnan(span)
        if not np.array_equal(span[seen], vals[seen]):
            return None
        span[~seen] = vals[~seen]
    return None if np.isnan(scores).any() else scores


def agrees(seg: Segment, report: dict, cuts: list[int]) -> bool:
    """Whether a part cut where the single pass cuts (``cuts``) over the frames it answers
    for: from its range's start to the cut that ended its last scene, or to the file's end
    (the last part), or, for a part that owns no scene, to its range's end (no cut there)."""
    end = report["end"]
    if seg.last:
        if report["last"] != seg.frames - 1:  # it did not read to the file's end
            return False
        end = report["last"]
    elif end is None:
        if seg.part == 0 or report["owned"]:  # a scene of its own never ended
            return False
        end = seg.stop - 1
    lo, hi = bisect.bisect_left(cuts, seg.start), bisect.bisect_right(cuts, end)
    mine = [c for c in report["cuts"] if seg.start <= c <= end]
    return mine == cuts[lo:hi]
