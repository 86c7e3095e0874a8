"""A real local testnet for the client's tests: `fairgrid-testnet up`
(the binary named by FAIRGRID_TESTNET_BIN), stopped at the end."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def testnet(tmp_path_factory):
    binary = os.environ.get("FAIRGRID_TESTNET_BIN")
    if not binary:
        pytest.fail("set FAIRGRID_TESTNET_BIN to a built fairgrid-testnet (cargo test does)")
    root = tmp_path_factory.mktemp("testnet")
    proc = subprocess.Popen(
        [binary, "up", "--nodes", "3", "--owners", "2", "--keep", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    nodes, deadline = [], time.monotonic() + 120
    try:
        for line in proc.stdout:
            if line.startswith("node "):
                fields = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
                nodes.append(fields)
            if line.startswith("ready"):
                break
            if time.monotonic() > deadline:
                pytest.fail("the testnet did not start in 120 s")
        if not nodes:
            pytest.fail(f"the testnet did not start: {proc.poll()}")
        yield nodes
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
