"""Click parameter types shared by several commands."""

from __future__ import annotations

import re

import click


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
