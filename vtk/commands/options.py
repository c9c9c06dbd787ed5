"""Click parameter types shared by several commands."""

from __future__ import annotations

import re
from dataclasses import fields

import click


def defaults_of(cls):
    """``default(name)``: the default of the field ``name`` of the config dataclass ``cls``
    (TrainConfig, ShardConfig, EvalConfig): the one source of a command's defaults, shown in
    --help as [default: ...]."""
    table = {f.name: f.default for f in fields(cls)}
    return table.__getitem__


class Device(click.ParamType):
    """auto | cpu | cuda | cuda:N, checked when the command line is parsed (a typo such as
    ``cdua`` would otherwise fail only when a model is first moved, deep in the work)."""

    name = "device"

    def get_metavar(self, param, ctx=None):
        return "[auto|cpu|cuda|cuda:N]"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value.strip()):
            return value.strip()
        self.fail(f"{value!r}: choose auto, cpu, cuda or cuda:N (N a GPU index)", param, ctx)


DEVICE = Device()


def vlm_options(f):
    """The video captioner's settings (``vtk.captions.vlm.VLMSettings``), for vtk shard and
    vtk caption: used where a vlm: model captions."""
    from vtk.captions.vlm import MODES, VLMSettings  # torch-free

    default = defaults_of(VLMSettings)
    opts = [
        click.option("--vlm-fps", type=click.FloatRange(min=0, min_open=True),
                     default=default("fps"), show_default=True,
                     help="Frames per second a vlm: model sees."),
        click.option("--vlm-window", type=click.IntRange(min=1), default=default("window"),
                     show_default=True,
                     help="Clip frames per vlm: request (NeMo Curator's window); a longer clip "
                          "gets a caption per window, then a merged one."),
        click.option("--vlm-mode", type=click.Choice(MODES), default=default("mode"),
                     show_default=True,
                     help="windows, or diff: captions of adjacent keyframes with the previous "
                          "caption, then merged (ShareGPT4Video)."),
        click.option("--vlm-max-tokens", type=click.IntRange(min=1), default=default("max_tokens"),
                     show_default=True,
                     help="New tokens per generation; a caption cut there is marked truncated."),
        click.option("--vlm-prompt", type=click.Path(exists=True, dir_okay=False),
                     default=None, help="A file holding the prompt (default: a built-in one "
                                        "asking for actions, motion and camera)."),
        click.option("--vlm-batch", type=click.IntRange(min=1), default=default("batch"),
                     show_default=True,
                     help="Requests per generate call (captions do not depend on it)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


class Captions(click.ParamType):
    """``--captions``: a built-in mode, or a caption by name (``vlm``, a caption layer ``NAME``
    of vtk caption, or one scale of it ``NAME.fine``)."""

    name = "captions"

    def get_metavar(self, param, ctx=None):
        from vtk.types import CAPTION_MODES

        return "[" + "|".join(CAPTION_MODES) + "|NAME]"

    def convert(self, value, param, ctx):
        from vtk.types import CAPTION_MODES, is_caption_name

        if isinstance(value, str) and is_caption_name(value):
            return value
        self.fail(f"{value!r}: choose {', '.join(CAPTION_MODES)}, or a caption's name (vlm, a "
                  f"caption layer NAME, NAME.fine)", param, ctx)


CAPTIONS = Captions()
