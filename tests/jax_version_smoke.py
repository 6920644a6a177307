"""Smoke test of a jax_pccl on another JAX release (#21): 2 peer processes,
jitted all_reduce (sum, a bf16 avg over a pytree), start/wait, all_gather,
broadcast and reduce_scatter (with vmap and grad), a shared-state sync with a
0-d leaf. Prints "smoke passed" and exits 0, or says what failed.

By hand, for a release X of the supported range (pyproject.toml):
    python3.11 -m venv /tmp/vX && /tmp/vX/bin/pip install jax==X jaxlib==X numpy
    PYTHONPATH=DIR /tmp/vX/bin/python tests/jax_version_smoke.py
with DIR holding a jax_pccl package whose _pccl was built against the oldest
jaxlib's FFI headers (cmake -DPython_EXECUTABLE=<a python with that jaxlib>):
XLA accepts handlers of an older FFI API version, never of a newer one."""
import os, subprocess, sys

if len(sys.argv) > 1:
    import jax, jax.numpy as jnp, numpy as np
    import jax_pccl as pccl
    i = int(sys.argv[1])
    comm = pccl.Communicator.from_env(timeout=30).connect(min_peers=2)
    f = jax.jit(lambda x: pccl.all_reduce(x, comm, op="sum"))
    assert float(f(jnp.full(4, i + 1.0))[0]) == 3.0
    g = jax.jit(lambda t: pccl.all_reduce(t, comm, op="avg"))
    out = g({"a": jnp.full(3, 2.0 * i, jnp.bfloat16), "b": jnp.arange(4, dtype=jnp.int32)})
    assert float(out["a"][0]) == 1.0 and int(out["b"][3]) == 3
    h = jax.jit(lambda x: pccl.all_reduce_wait(pccl.all_reduce_start(x, comm)))
    assert float(h(jnp.ones(8))[0]) == 2.0
    r = comm.rank
    rows = jax.jit(lambda x: pccl.all_gather(x, comm))(jnp.full(3, float(r)))
    assert rows.tolist() == [[0.0] * 3, [1.0] * 3], rows
    root = jax.jit(jax.vmap(lambda x: pccl.broadcast(x, comm, root=1)))(jnp.full((2, 3), float(r)))
    assert root.tolist() == [[1.0] * 3] * 2, root
    half = jax.jit(lambda x: pccl.reduce_scatter(x, comm))(jnp.arange(4.0) + r)
    assert half.tolist() == ([1.0, 3.0] if r == 0 else [5.0, 7.0]), half
    grad = jax.jit(jax.grad(lambda x: jnp.sum(pccl.all_gather(x, comm))))(jnp.ones(2))
    assert grad.tolist() == [2.0, 2.0], grad
    state, info = comm.sync_shared_state({"w": jnp.full(5, float(i)), "step": jnp.int32(7)}, revision=1)
    assert state["step"].shape == () and float(state["w"][0]) in (0.0, 1.0)
    print(f"peer {i} ok: jax {jax.__version__}, jaxlib {__import__('jaxlib').__version__}", flush=True)
    comm.close()
else:
    import jax_pccl as pccl
    with pccl.Master() as m:
        env = {**os.environ, "JAX_PCCL_MASTER": m.address, "JAX_PLATFORMS": "cpu"}
        ps = [subprocess.Popen([sys.executable, __file__, str(i)], env=env) for i in range(2)]
        codes = [p.wait(timeout=300) for p in ps]
    print("smoke", "passed" if codes == [0, 0] else f"FAILED {codes}")
    sys.exit(0 if codes == [0, 0] else 1)
