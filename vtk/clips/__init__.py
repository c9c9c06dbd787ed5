"""Sources to clips: decode once, detect scenes on a small copy, resample, resize, cut.

Three stages, one module each:

- ``vtk.clips.decode``: a source's frames as :class:`DecodedFrame` values. For a video file a
  decode thread (PyAV and OpenCV release the GIL, so it runs beside the caller on a second core)
  only decodes; in-memory items (the synthetic world) go through the same resample / resize /
  cut path.
- ``vtk.clips.cut``: :func:`clips_from_item`. The calling thread turns each decoded frame into

  - a small BGR copy (``detect_width`` wide, bilinear, as PySceneDetect downscales) for
    ``ContentDetector(threshold=27)``, InternVid's detector, fed frame by frame, and
  - for the frames the output rate keeps, an RGB frame at the output size (short side
    ``size``, even dimensions),

  then runs the detector and the cutter and yields :class:`Clip` values. Only the current
  scene's output frames are held (at most ``2 * max_clip`` seconds of them), never the source at
  full size, so a feature film streams through in bounded memory.
- ``vtk.clips.encode``: :func:`encode_mp4`. The shard workers encode each clip on the thread
  that cut it: the two threads then cost about the same per frame.

- ``vtk.clips.segments``: one long file cut into scenes by several workers, each a
  keyframe-aligned part of it, reconciled into the cuts one pass makes.

``vtk.clips.config`` holds what they share (:class:`ClipConfig`, :class:`ClipStats`,
:class:`InputError`, the limits).

Clip modes (:data:`MODES`): ``scenes`` (scene cuts; scenes shorter than ``min_clip`` dropped,
longer than ``max_clip`` split), ``fixed`` (windows of ``clip_len`` seconds), ``whole`` (one
clip per source) and ``auto`` (``whole`` for in-memory items and sources with start/end
timestamps, ``scenes`` otherwise). Timestamps on the item (manifest start/end) always win: the
range becomes one clip. Cuts are frame-accurate because every clip is re-encoded.

Output frames are turned upright by the source's display matrix (phones store portrait video
as landscape plus a quarter turn). A clip ends with its last output frame or with the source,
whichever comes first. A source that breaks part-way (corrupt packets, a file shorter than its
video stream says) keeps the complete clips before the fault: see :func:`clips_from_item`.
Truncation is judged from the video stream's own duration only, never the container's, which
spans the audio too.
"""

from vtk.clips.config import (
                              DEFAULT_SIZE,
                              MAX_CLIP_FRAMES,
                              MAX_FPS,
                              MODES,
                              ClipConfig,
                              ClipStats,
                              InputError,
                              output_size,
)
from vtk.clips.cut import clips_from_item, effective_mode
from vtk.clips.decode import MAX_BAD_PACKETS, SWS_THREADS, DecodedFrame, open_video
from vtk.clips.encode import CODECS, encode_mp4

__all__ = [
    "CODECS", "DEFAULT_SIZE", "MAX_BAD_PACKETS", "MAX_CLIP_FRAMES", "MAX_FPS", "MODES",
    "SWS_THREADS", "ClipConfig", "ClipStats", "DecodedFrame", "InputError", "clips_from_item",
    "effective_mode", "encode_mp4", "open_video", "output_size",
]
