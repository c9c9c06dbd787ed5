"""The `vtk` command: a click group with one subcommand per module in vtk/commands/.

Subcommands are imported only when run, so `vtk --help` stays fast and a missing optional
dependency of one command never breaks another.
"""

from __future__ import annotations

import importlib
import sys

import click

from vtk import __version__
from vtk.errors import VtkError

COMMANDS = {
    "shard": "videos or the synthetic world to WebDataset shards with captions",
    "inspect": "print a shard set's card, validate every tar, preview samples",
    "train": "train ViCLIP on a shard set (with video token masking)",
    "eval": "zero-shot classification and retrieval on benchmarks",
    "ablate": "run the caption-scale or masking-ratio ablation",
    "report": "tables and plots of ablation results",
    "demo": "the whole study on the synthetic world, offline, on a CPU",
    "bench": "benchmarks: decode, shard, train, captions, caption-quality, gpu, resume, motion, pipeline",
    "view": "browse a shard set's clips and captions in the browser (or as static files)",
    "score": "score clips: clip-text similarity, motion, frame hashes (sidecars per shard)",
    "caption": "caption a shard set into a caption layer (sidecars per shard; vlm: models)",
    "filter": "a new shard set of the clips that score rules and deduplication keep",
    "verify": "re-hash every shard of a set against its index.json (and check its sidecars)",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"vtk.commands.{name}")
        return module.command

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, help_ in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vtk")
def cli():
    """vtk: video-text shards, ViCLIP training and zero-shot evaluation.

    \b
    Start with:  vtk demo --quick
    """


# rich's width where no standard stream is a terminal (nohup, Slurm, CI, a pipe): it would wrap
# every line at 80 columns, cutting paths and messages in two; a log keeps one event a line
LOG_COLUMNS = "4096"


def log_width() -> None:
    """Where none of stdin, stdout and stderr is a terminal and COLUMNS is unset, set it to
    LOG_COLUMNS: every rich Console then prints a message on one line (a table as wide as its
    cells). Children (torchrun, ablation arms) inherit it with the same streams."""
    import os

    if "COLUMNS" in os.environ:
        return
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            if os.isatty(stream.fileno()):
                return
        except (AttributeError, ValueError, OSError):  # not a real file (a test's capture):
            return  # leave rich to decide
    os.environ["COLUMNS"] = LOG_COLUMNS


def main(argv=None):
    log_width()
    try:
        cli.main(args=argv, standalone_mode=False)
    except VtkError as e:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(e))}",
                                                   highlight=False)
        sys.exit(1)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    return 0


if __name__ == "__main__":
    main()
