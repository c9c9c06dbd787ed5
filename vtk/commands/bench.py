"""`vtk bench`: throughput benchmarks, one subcommand per stage (code in vtk/bench/), and the
caption-quality score of the built-in captioners (code in vtk/captions/evaluate.py)."""

from __future__ import annotations

import click

from vtk.bench.captions import command as captions
from vtk.bench.decode import command as decode
from vtk.bench.gpu import command as gpu
from vtk.bench.motion import command as motion
from vtk.bench.pipeline import command as pipeline
from vtk.bench.resume import command as resume
from vtk.bench.shard import command as shard
from vtk.bench.train import command as train
from vtk.captions.evaluate import command as caption_quality


@click.group("bench")
def command():
    """Benchmarks: decode, shard, train, resume, captions, motion and the whole pipeline; caption
    quality; a GPU check.

    \b
    Example:  vtk bench shard film.mp4 --size 224 --json bench-shard.json
    """


command.add_command(shard)
command.add_command(decode)
command.add_command(train)
command.add_command(captions)
command.add_command(caption_quality)
command.add_command(gpu)
command.add_command(resume)
command.add_command(motion)
command.add_command(pipeline)
