"""The explorer as a benchmark's subprocess: wait until it listens. Imports nothing heavy."""

from __future__ import annotations

import re
import subprocess
import threading

LISTENING = re.compile(r"http://127\.0\.0\.1:(\d+)/")


def wait_until_listening(proc: subprocess.Popen) -> tuple[int, list[str]]:
    """(port, its log lines up to the one naming the URL, that one included) of a `mnistlab serve --port 0` started with stderr=PIPE and
    text=True: its log (on stderr) names the URL once it listens. From then on a thread keeps the pipe
    drained, so the server never blocks on a full pipe. A server that exits first is a RuntimeError."""
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        m = LISTENING.search(line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return int(m.group(1)), lines
    raise RuntimeError(f"the server exited with {proc.wait()} before listening")
