"""bench/serve.py's RSS column counts a server's workers: a parent whose child holds the memory is measured whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from serve import peak_rss_mb, process_group

# A parent that holds little and a worker child that touches 200 MB, as LitServe's server and inference worker do.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "b = bytearray(200 * 2**20); print('ready', flush=True); "
                          "import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print("ready", flush=True)
time.sleep(60)
"""


def test_the_peak_counts_every_process_of_the_server() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        members = process_group(parent.pid)
        assert parent.pid in members and len(members) == 2, members
        own = (
            next(
                int(line.split()[1])
                for line in Path(f"/proc/{parent.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:")
            )
            / 1024
        )
        assert own < 100  # the parent alone: what the old column showed
        assert peak_rss_mb(parent.pid) >= own + 200
    finally:
        subprocess.run(["kill", "--", f"-{parent.pid}"], check=False)
        parent.wait(10)
