"""What a fresh output buffer costs on this machine, and why it varies.

    python bench/first_touch.py --mbytes 256

A jitted all_reduce without donation writes its result into a buffer that XLA
allocates for the call. Buffers this large come straight from the kernel
(mmap), so every page is faulted in and zeroed on first touch, by whichever
thread writes it first (the engine, for all_reduce). In a virtual machine
that reports free pages back to its host (Linux free page reporting,
virtio-balloon or virtio-mem), pages freed a moment ago may have been handed
back, and touching them again costs a fault in the host as well. How much of
that a benchmark pays depends on how long its buffers stay freed, so figures
with fresh outputs move between runs while donated (in-place) ones do not.

Prints the median time to allocate and fill a fresh buffer after each pause,
against refilling one buffer that stays allocated, and the kernel's free
page reporting settings where it exposes them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def median_seconds(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mbytes", type=int, default=256)
    ap.add_argument("--pauses", default="0,0.5,2", help="seconds between free and the next allocation")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    count = a.mbytes * 2**20 // 4
    gbps = lambda s: a.mbytes * 2**20 / s / 1e9

    kept = np.ones(count, np.float32)
    t = median_seconds(lambda: kept.fill(2.0), a.repeats)
    print(f"{a.mbytes} MiB, refill a buffer that stays allocated: {t * 1e3:8.1f} ms ({gbps(t):.2f} GB/s)")
    del kept
    for pause in (float(p) for p in a.pauses.split(",")):
        def fresh(pause=pause):
            time.sleep(pause)
            t0 = time.perf_counter()
            np.ones(count, np.float32)
            return time.perf_counter() - t0
        t = statistics.median(fresh() for _ in range(a.repeats))
        print(f"{a.mbytes} MiB, allocate and fill after a {pause:g} s pause: {t * 1e3:8.1f} ms "
              f"({gbps(t):.2f} GB/s)")
    params = Path("/sys/module/page_reporting/parameters")
    if params.is_dir():
        settings = {p.name: p.read_text().strip() for p in sorted(params.iterdir())
                    if p.name in ("page_reporting_order", "min_free_ms", "reported_kib")}
        print(f"free page reporting: {settings}")
    else:
        print("free page reporting: not exposed by this kernel")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
