"""A master that writes its status (JSON) to a file ten times a second, for
tests whose master runs where the test process cannot reach it (inside a WAN
lab host): the namespaces share the filesystem. Runs until killed.

The file is up to a write interval old when read: `written_at` (unix time,
taken before the status) lets a reader wait for a status that is newer than
what it observed elsewhere."""
from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--status", required=True, help="file the status is written to")
    ap.add_argument("--probe-seconds", type=float, default=1.0)
    args = ap.parse_args()
    import jax_pccl as pccl

    with pccl.Master(host=args.host, port=args.port, probe_seconds=args.probe_seconds) as master:
        while True:
            written_at = time.time()
            with open(args.status + ".tmp", "w") as f:
                json.dump({"written_at": written_at, **master.status()}, f)
            os.replace(args.status + ".tmp", args.status)
            time.sleep(0.1)


if __name__ == "__main__":
    main()
