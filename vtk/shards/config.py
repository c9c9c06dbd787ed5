"""``ShardConfig``: every option of `vtk shard`, with its default, written once. The click
command reads its defaults from here and ``build_shard_set`` takes these fields as keyword
arguments; the clip settings default to ``ClipConfig``'s and the video captioner's to
``VLMSettings``', so each default has one home."""

from __future__ import annotations

from dataclasses import dataclass, fields

from vtk.captions.vlm import VLMSettings
from vtk.clips import ClipConfig
from vtk.errors import check_keys
from vtk.sources.fetch import FetchConfig


@dataclass
class ShardConfig:
    name: str = "shard"  # shard file prefix
    captions: str = "none"  # none | coarse | fine | both
    coarse_model: str | None = None  # None: shapes for synth:, tagger otherwise
    fine_model: str | None = None
    summarizer: str = "rules"
    fine_fps: float | None = None  # None: vtk.captions.CaptionSpec's own
    caption_device: str = "auto"
    caption_cache: str | None = None  # None: OUT/.caption-cache
    no_caption_cache: bool = False
    vlm_model: str | None = None  # a video captioner for the caption scale ``vlm``
    vlm_fps: float = VLMSettings.fps
    vlm_window: int = VLMSettings.window
    vlm_mode: str = VLMSettings.mode
    vlm_max_tokens: int = VLMSettings.max_tokens
    vlm_prompt: str | None = None  # a file holding the prompt
    vlm_batch: int = VLMSettings.batch
    clip_mode: str = ClipConfig.mode
    min_clip: float = ClipConfig.min_clip
    max_clip: float = ClipConfig.max_clip
    clip_len: float = ClipConfig.clip_len
    size: int | None = ClipConfig.size
    fps: float = ClipConfig.fps
    codec: str = "h264"
    gop: int | None = ClipConfig.gop
    samples_per_shard: int = 1000
    workers: int | None = None  # None: the CPUs, at most 8
    engine: str = "local"
    ray_address: str | None = None
    captioners: int | None = None
    captioner_gpus: float | None = None
    video_root: str | None = None
    download_timeout: float = FetchConfig.timeout  # sources at http(s) URLs
    download_concurrency: int | None = None  # downloads at a time per machine; None: no cap
    resume: bool = False
    retry_failed: bool = False

    @classmethod
    def from_options(cls, options: dict) -> ShardConfig:
        """From keyword arguments; an unknown one is a VtkError naming the closest field."""
        check_keys(options, [f.name for f in fields(cls)], "vtk shard option")
        return cls(**options)
