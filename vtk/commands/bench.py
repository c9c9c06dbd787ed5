"""`vtk bench`: throughput benchmarks, one subcommand per stage (code in vtk/bench/)."""

from __future__ import annotations

import click

from vtk.bench.decode import command as decode
from vtk.bench.shard import command as shard
from vtk.bench.train import command as train


@click.group("bench")
def command():
    """Throughput benchmarks: decode, shard, train.

    \b
    Example:  vtk bench shard film.mp4 --size 224 --json bench-shard.json
    """


command.add_command(shard)
command.add_command(decode)
command.add_command(train)
