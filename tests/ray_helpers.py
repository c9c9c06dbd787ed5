"""A Ray node on 127.0.0.1 for the tests (``ray start --block`` in its own session), shared by
tests/test_ray.py and tests/test_s3.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from data_helpers import ChildLines

RAY_BIN = os.path.join(os.path.dirname(sys.executable), "ray")
# the test cluster is private to 127.0.0.1 and this test: no token to hand to every driver
AUTH = {"RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict:
    """This process's environment (AWS variables included) for a node or a driver."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", **AUTH)
    env.pop("RAY_ADDRESS", None)
    return env


def start_node(args: list[str]) -> subprocess.Popen:
    """``ray start ... --block``: the node lives as long as the returned process, which is
    returned once the node says it started (its output lines are ``.lines``)."""
    proc = subprocess.Popen([RAY_BIN, "start", "--block", "--disable-usage-stats",
                             "--node-ip-address", "127.0.0.1", *args], env=ray_env(),
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    proc.lines = ChildLines(proc.stdout)
    proc.lines.wait_for(lambda line: "Ray runtime started" in line)
    return proc


def stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM the node's whole session, then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
