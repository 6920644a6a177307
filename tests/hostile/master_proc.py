"""A master with a shared secret, in a process of its own so that the driver
can measure its resident memory. Prints {"address": ...}, then answers each
"status" line on stdin with the master's status JSON; exits on "quit" or EOF.
The secret comes from $PCCL_HOSTILE_SECRET_HEX (never the command line).
"""
import json
import os
import sys

import jax_pccl as pccl


def main() -> int:
    secret = bytes.fromhex(os.environ["PCCL_HOSTILE_SECRET_HEX"])
    with pccl.Master(host="127.0.0.1", port=0, secret=secret) as master:
        print(json.dumps({"address": master.address, "pid": os.getpid()}), flush=True)
        for line in sys.stdin:
            if line.strip() == "status":
                print(json.dumps(master.status()), flush=True)
            elif line.strip() == "quit":
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
