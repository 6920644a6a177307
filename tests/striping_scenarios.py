"""Striping scenarios run inside each peer process (see peer_scenarios.py).

Each peer opens its own number of connections to its ring neighbour
(PCCL_TEST_CONNECTIONS, read by peer_scenarios.join), so the hops of one ring
are striped differently. The arrays are large enough that every segment is
cut into many chunks, i.e. every lane of every hop carries data. The test
process rebuilds the inputs from tests/cases.py and checks exactness.
"""
from __future__ import annotations

import numpy as np

import cases

# 1,500,007 float32 = 5.7 MiB: several 1 MiB chunks per segment at 3 peers,
# and uneven segments (not divisible by 3).
SHAPE = (1_500_007,)
EXACT_CASES = (("sum", "float32"), ("max", "int32"), ("avg", "bfloat16"), ("prod", "int8"))
QUANTIZED = ("minmax_uint8", "zero_point_uint8", "bfloat16")


def quantized_input(index: int) -> np.ndarray:
    return np.random.default_rng(500 + index).normal(size=SHAPE).astype(np.float32)


TCP_INFO_BYTES_ACKED = 120  # offset of tcpi_bytes_acked (u64) in struct tcp_info (Linux >= 4.1)


def outgoing_tcp_bytes() -> list:
    """Every TCP connection of this process, as the kernel counts it: remote
    endpoint and payload bytes the remote acknowledged (TCP_INFO), read from
    the sockets in /proc/self/fd. Independent of the library's own counters."""
    import os
    import socket
    import struct
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            s = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if s.type != socket.SOCK_STREAM or s.family != socket.AF_INET:
                continue
            host, port = s.getpeername()[:2]
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            acked = struct.unpack_from("<Q", info, TCP_INFO_BYTES_ACKED)[0]
            out.append({"remote": f"{host}:{port}", "acked": acked})
        except OSError:
            pass  # a listener or a socket closed meanwhile
        finally:
            s.close()  # the dup'ed fd only; the library's own fd stays open
    return out


def scenario_striping(ctx):
    import jax
    import jax.numpy as jnp
    from peer_scenarios import encode, ready

    pccl, comm, rec, i = ctx.pccl, ctx.comm, ctx.rec, ctx.index
    rec.data["meta"]["connections"] = comm.connections
    rec.flush()
    for op, dtype in EXACT_CASES:
        x = jnp.asarray(cases.all_inputs(op, dtype, shape=SHAPE, n=ctx.args.world)[i])
        f = jax.jit(lambda v, op=op: pccl.all_reduce(v, comm, op=op))
        rec.check(f"eager/{op}/{dtype}", lambda x=x, op=op: encode(ready(pccl.all_reduce(x, comm, op=op))))
        rec.check(f"jit/{op}/{dtype}", lambda x=x, f=f: encode(ready(f(x))))
    exact = np.sum([quantized_input(k).astype(np.float64) for k in range(ctx.args.world)], axis=0)
    for q in QUANTIZED:
        def measure(q=q):
            y = np.asarray(ready(pccl.all_reduce(jnp.asarray(quantized_input(i)), comm, op="sum",
                                                 quantization=q)))
            err = float(np.max(np.abs(y.astype(np.float64) - exact)))
            return {"sha256": cases.sha256(y), "rel_err": err / float(np.max(np.abs(exact)))}
        rec.check(f"quantized/{q}", measure)
    rec.check("tcp", outgoing_tcp_bytes)


SCENARIOS = {"striping": (scenario_striping, True)}
