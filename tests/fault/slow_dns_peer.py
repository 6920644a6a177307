"""A peer whose master's name resolves slowly (tests/fault/slow_dns.c preloaded).

    python slow_dns_peer.py connect PORT   # every lookup is slow: connect() must
                                           # fail within its timeout
    python slow_dns_peer.py close PORT     # the first lookup is fast; once the
                                           # test killed the master (it says so on
                                           # stdin) the link's reconnection is stuck
                                           # in a lookup: close() must not wait for it
Prints one JSON line: {"error": type or null, "elapsed": seconds}.
"""

import json
import sys
import time

import jax_pccl as pccl

mode, port = sys.argv[1], int(sys.argv[2])
comm = pccl.Communicator(f"slow-dns.invalid:{port}", timeout=1.0)
error = None
t0 = time.monotonic()
if mode == "connect":
    try:
        comm.connect(timeout=5)
    except pccl.PcclError as exc:
        error = type(exc).__name__
else:
    comm.connect(timeout=30)
    print("connected", flush=True)
    sys.stdin.readline()  # the master is dead and the link is reconnecting
    time.sleep(1.0)  # its next attempt is in the slow lookup
    t0 = time.monotonic()
    comm.close()
print(json.dumps({"error": error, "elapsed": time.monotonic() - t0}), flush=True)
