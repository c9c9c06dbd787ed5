"""Command-line bounds: nonsense values are refused when the command line is parsed (exit 2,
the option named, no traceback), and --help shows the bounds."""

import pytest
from data_helpers import run_cli


def run(args, capsys):
    code, err, out = run_cli(args, capsys)
    return code, out + err


@pytest.mark.parametrize("args", [["--workers", "-1"], ["-j", "0"],
                                  ["--caption-device", "bogus"], ["--caption-device", "cuda:x"],
                                  ["--samples-per-shard", "0"]])
def test_shard_refuses_nonsense_before_any_work(tmp_path, capsys, args):
    out = tmp_path / "out"
    code, text = run(["shard", "synth:train?n=2", "--out", str(out), "--quiet", *args], capsys)
    assert code == 2 and "Traceback" not in text, text
    assert "Invalid value" in text and not out.exists(), text


def test_shard_takes_a_gpu_index_for_its_caption_models(tmp_path, capsys):
    code, text = run(["shard", "synth:train?n=2", "--out", str(tmp_path / "o"), "--quiet",
                      "--caption-device", "cpu", "--workers", "1"], capsys)
    assert code == 0, text


@pytest.mark.parametrize("command, shown", [
    ("train", ["--batch-size INTEGER RANGE", "x>=1", "--lr FLOAT RANGE", "x>0", "0<=x<1"]),
    ("eval", ["--batch-size INTEGER RANGE", "[auto|cpu|cuda|cuda:N]"]),
    ("shard", ["--workers INTEGER RANGE", "[auto|cpu|cuda|cuda:N]"]),
])
@pytest.mark.floor
def test_help_shows_the_bounds(capsys, command, shown):
    code, text = run([command, "--help"], capsys)
    assert code == 0
    for s in shown:
        assert s in text, s


@pytest.mark.parametrize("arg", [["--frames", "0"], ["--steps", "-5"], ["--batch-size", "0"],
                                 ["--lr", "0"], ["--seeds", "0"], ["--mask", "1.5"]])
def test_ablate_mirrors_the_train_bounds(tmp_path, capsys, arg):
    code, text = run(["ablate", "captions", str(tmp_path), "--out", str(tmp_path / "o"), *arg],
                     capsys)
    assert code == 2 and arg[0] in text and not (tmp_path / "o").exists(), text


def test_vtk_help_lists_every_bench_subcommand():
    """vtk --help's line for bench names each of its subcommands (gpu and resume were missing)."""
    from vtk.cli import COMMANDS
    from vtk.commands.bench import command as bench

    listed = {w.strip(" ,") for w in COMMANDS["bench"].split(":", 1)[1].split(",")}
    assert listed == set(bench.commands)


def test_help_examples_keep_their_continuation_lines():
    """A docstring example ending in a single backslash joined its next line into it
    (vtk train --help showed '100000           --out runs/mix'): every command's help is free
    of a gap of spaces before an option inside a line."""
    import re

    import click

    from vtk.cli import COMMANDS, cli

    ctx = click.Context(cli)
    commands = [cli.get_command(ctx, name) for name in COMMANDS]
    commands += [sub for c in commands if isinstance(c, click.Group) for sub in c.commands.values()]
    for command in commands:
        text = command.get_help(click.Context(command, info_name=command.name))
        joined = [ln for ln in text.splitlines() if re.search(r"\S {4,}--\w", ln)]
        assert not joined, (command.name, joined)
