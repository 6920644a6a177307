"""The ordered-effect token between jitted collectives (jax_pccl/ops/effects.py).

jax_pccl hands JAX's token for our effect straight to the next call when it
already lives on that call's single device, instead of letting JAX reshard it
(a no-op move that cost more than a small all-reduce). These tests pin down
that the shortcut is taken, that it changes nothing else, and that program
order across many jitted calls still holds.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax._src import dispatch


def test_token_on_the_calls_device_is_handed_over_as_is(pccl, master):
    from jax_pccl.ops.effects import COLLECTIVE_EFFECT

    with pccl.Communicator(master.address).connect() as comm:
        f = jax.jit(lambda v: pccl.all_reduce(v, comm))
        f(jnp.ones(8)).block_until_ready()
        token = dispatch.runtime_tokens.current_tokens[COLLECTIVE_EFFECT]
        device = jax.devices()[0]
        assert dispatch.runtime_tokens.get_token_input(COLLECTIVE_EFFECT, [device]) is token


def test_an_effect_without_a_token_gets_a_fresh_one_from_jax(pccl):
    from jax._src import core

    class Unseen:  # an effect no token exists for yet: JAX's own code makes one
        pass

    effect, device = Unseen(), jax.devices()[0]
    assert dispatch.RuntimeTokenSet.get_token_input._pccl_fast_path
    first = dispatch.runtime_tokens.get_token_input(effect, [device])
    assert isinstance(first, core.Token)
    assert dispatch.runtime_tokens.current_tokens[effect] is first
    assert dispatch.runtime_tokens.get_token_input(effect, [device]) is first
    dispatch.runtime_tokens.current_tokens.pop(effect)


def test_independent_jitted_calls_meet_in_program_order_across_peers(pccl):
    """3 peer processes, 200 jitted all_reduces with no data dependency
    between them, dispatched before any result is read: call k must meet call
    k on every peer (a shape of its own per call, values of its own per peer)."""
    import harness
    from peer_scenarios import EFFECT_ORDER_CALLS, effect_order_input
    r = harness.run_scenario(pccl, "effect_order", 3, timeout=180)
    assert not r.problems, r.diagnostics()
    expected = [float(sum(effect_order_input(i, k)[0] for i in range(3)))
                for k in range(EFFECT_ORDER_CALLS)]
    assert r.values("independent_calls") == [expected] * 3


def test_two_hundred_chained_jitted_calls_give_the_right_values(pccl, master):
    with pccl.Communicator(master.address).connect() as comm:
        add = jax.jit(lambda v, k: pccl.all_reduce(v, comm) + k)
        x = jnp.zeros(4, jnp.float32)
        for k in range(200):  # each call consumes the previous result
            x = add(x, 1.0)
        np.testing.assert_array_equal(np.asarray(x), np.full(4, 200.0, np.float32))
        assert comm.stats()["collectives_done"] >= 200
