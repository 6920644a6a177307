"""Edges of the XLA FFI handlers (issue #17), run inside each peer process.

ticket_wrap: all_reduce_start tickets past 2^31, 2^32 and 2^63. The engine's
ticket counter is moved there by a test hook instead of running 2^31
collectives; each peer moves its own counter elsewhere (tickets are local).
The old handlers kept 32 bits of each ticket, so every wait failed there.

handler_faults: each FFI handler in turn throws std::bad_alloc (a test hook
where a real allocation of that handler could fail). The old handlers let
such an exception cross the FFI boundary (undefined behaviour through a C
ABI; jaxlib 0.10.2 happens to catch it and reports an unclassified "XLA FFI
call failed"). Now each handler catches it and returns a PcclError, and the
communicator stays usable.
"""
from __future__ import annotations

import numpy as np

# Where each peer's ticket counter starts, per round: below, at and across
# the 32-bit boundaries and near the 64-bit end (3 leaves per round cross it).
TICKET_STARTS = {
    0: (2**31 - 2, 2**32 - 2, 2**63 - 1, 2**64 - 16),
    1: (2**32 - 1, 2**31 - 1, 2**64 - 16, 2**32),
}
FAULTS = {"all_reduce": 1, "start": 2, "wait_bind": 3, "wait": 4}  # handler_faults.h


def peer_tree(index: int) -> dict:
    return {"a": (np.arange(5) + index).astype(np.float32),
            "b": (np.arange(6).reshape(2, 3) * (index + 1)).astype(np.int32),
            "c": np.full((3,), 7 + index, np.float32)}


def scenario_ticket_wrap(ctx):
    import jax
    from jax_pccl import _pccl
    from peer_scenarios import encode, ready

    pccl, comm, rec = ctx.pccl, ctx.comm, ctx.rec
    tree = {k: jax.numpy.asarray(v) for k, v in peer_tree(ctx.index).items()}
    enc = lambda t: {k: encode(v) for k, v in ready(t).items()}  # noqa: E731

    @jax.jit
    def jitted(t):
        out, info = pccl.all_reduce_wait(pccl.all_reduce_start(t, comm, op="sum"), return_info=True)
        return out, info.world_size

    for k, first in enumerate(TICKET_STARTS[ctx.index]):
        def eager(first=first):
            _pccl._set_next_ticket_for_testing(comm._native, first)
            h1 = pccl.all_reduce_start(tree, comm, op="sum")
            h2 = pccl.all_reduce_start(tree["a"], comm, op="max")
            return {"tree": enc(pccl.all_reduce_wait(h1)), "max": encode(ready(pccl.all_reduce_wait(h2)))}
        rec.check(f"eager/{k}", eager)

        def in_jit(first=first):
            _pccl._set_next_ticket_for_testing(comm._native, first)
            out, world = jitted(tree)
            return {"tree": enc(out), "world": int(world)}
        rec.check(f"jit/{k}", in_jit)


def scenario_handler_faults(ctx):
    import jax.numpy as jnp
    from jax_pccl import _pccl
    from peer_scenarios import encode, ready

    pccl, comm, rec = ctx.pccl, ctx.comm, ctx.rec
    x = jnp.asarray(peer_tree(ctx.index)["a"])

    def failing(fault, call):
        """call() with the fault armed: must raise; the next collective must work."""
        def run():
            _pccl._arm_handler_fault_for_testing(FAULTS[fault])
            try:
                call()
                outcome = "no error"
            except Exception as exc:  # noqa: BLE001 - the test checks what it was
                outcome = f"{type(exc).__name__}: {exc}"
            finally:
                _pccl._arm_handler_fault_for_testing(0)
            return outcome
        return run

    rec.check("all_reduce/raised",
              failing("all_reduce", lambda: ready(pccl.all_reduce(x, comm, op="sum"))))
    rec.check("all_reduce/after", lambda: encode(ready(pccl.all_reduce(x, comm, op="sum"))))

    rec.check("start/raised", failing("start", lambda: pccl.all_reduce_start(x, comm, op="sum")))
    rec.check("start/after",
              lambda: encode(ready(pccl.all_reduce_wait(pccl.all_reduce_start(x, comm, op="sum")))))

    # A failed wait leaves its collective started: waiting again on the same
    # handle must still deliver it.
    for fault in ("wait_bind", "wait"):
        handle = pccl.all_reduce_start(x * 2, comm, op="sum")
        rec.check(f"{fault}/raised", failing(fault, lambda h=handle: ready(pccl.all_reduce_wait(h))))
        rec.check(f"{fault}/after", lambda h=handle: encode(ready(pccl.all_reduce_wait(h))))
    rec.check("final", lambda: encode(ready(pccl.all_reduce(x, comm, op="sum"))))


SCENARIOS = {
    "ticket_wrap": (scenario_ticket_wrap, True),
    "handler_faults": (scenario_handler_faults, True),
}
