"""The scoring process's heap keeps freed image buffers for the next view and gives them back
when told (mammo_node.heap). Measured in a fresh interpreter by page faults and resident set,
not by time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource, sys
import numpy as np
from mammo_node import heap

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

def faults_of_one_view():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    image = np.empty((4096, 3328), np.float32)  # a full-size view's float image, 54 MB
    image.fill(0.5)
    del image
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

out = {"reuse": heap.reuse_freed_memory() if sys.argv[1] == "reuse" else None}
faults_of_one_view()
out["faults"] = [faults_of_one_view() for _ in range(3)]
out["rss_kept"] = rss()
out["released"] = heap.release_freed_memory()
out["rss_released"] = rss()
print(json.dumps(out))
"""


def probe(mode: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux only")
def test_freed_image_buffers_are_reused_and_given_back_when_idle() -> None:
    huge_pages = 4096 * 3328 * 4 // 2**21  # 26 even where the kernel maps 2 MiB pages
    fresh = probe("fresh")
    assert min(fresh["faults"]) >= huge_pages  # glibc maps and unmaps such a block every time
    kept = probe("reuse")
    assert kept["reuse"] is True
    assert max(kept["faults"]) < huge_pages // 4  # the heap's pages are used again
    assert kept["released"] is True
    assert kept["rss_kept"] - kept["rss_released"] > 40 * 2**20  # the 54 MB went back
