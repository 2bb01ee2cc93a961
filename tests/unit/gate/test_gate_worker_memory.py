"""The worker hands freed heap pages back once a second (glibc's malloc_trim): the nonces of
a busy second are freed seconds later, amid newer ones, where the heap would keep them."""

import subprocess
import sys

CHILD = r"""
import re

from spagate.gate.service.worker import heap_trimmer

def anon_kib():
    return int(re.search(r"^RssAnon:\s+(\d+)", open("/proc/self/status").read(), re.M)[1])

trim = heap_trimmer()
assert trim is not None, "glibc's malloc_trim not found"
trim(0)
# 60 MiB in 4 KiB buffers (malloc's heap, not Python's small-object arenas), every 16th kept:
# as a busy second's nonces freed amid newer ones, the free pages lie inside the heap.
blocks = [bytearray(4096) for _ in range(15_000)]
kept = blocks[::16]
del blocks
before = anon_kib()
trim(0)
after = anon_kib()
print(before, after, len(kept))
"""


def test_the_trim_hands_freed_heap_pages_back():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    before, after, _ = map(int, out.stdout.split())
    # 15,000 x 4 KiB = 58 MiB allocated, 15/16 of it freed but resident until the trim
    assert before - after > 30 * 1024, (before, after)
