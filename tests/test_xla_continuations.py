"""The rest of a jitted program after all_reduce_wait never runs on an engine
thread (issue #17, defect 1): programs with collectives after a completed wait
finish with exact results on 2 peer processes, with one slot and with several.

On the old code XLA ran the program's rest on the slot worker that completed
the wait; a later collective needing that slot waited for its own thread and
the group hung (heartbeats kept it alive). Each program is its own launch,
bounded by the harness's hard timeout, so a hang fails the test and is killed.
"""
import pytest

import continuation_scenarios as sc
import harness

N = 2
HANG_S = 75  # the programs take a few seconds; a hang is killed after this

SHAPES = [
    ("issue_single_slot", 1),  # the first reproducer
    ("issue_single_slot", 4),
    ("issue_pytree_after_wait", 4),  # the second reproducer
    ("issue_pytree_after_wait", 1),
    ("mixed_sizes_after_wait", 1),
    ("mixed_sizes_after_wait", 4),
    ("scan_start_wait_reduce", 1),
    ("scan_start_wait_reduce", 4),
    ("cond_wait_then_reduce", 1),
    ("cond_wait_then_reduce", 4),
    ("fori_pipeline", 1),
    ("fori_pipeline", 3),
    ("chained_waits", 2),
] + [("many_in_flight", c) for c in (1, 2, 3, 4)]


@pytest.mark.parametrize("program, concurrency", SHAPES,
                         ids=[f"{p}-c{c}" for p, c in SHAPES])
def test_program_completes_with_exact_results(pccl, program, concurrency):
    env = {i: {"PCCL_TEST_CONCURRENCY": str(concurrency)} for i in range(N)}
    run = harness.run_scenario(pccl, "continuation", N, timeout=HANG_S, comm_timeout=10,
                               aux=program, peer_env_extra=env)
    assert not run.problems, run.diagnostics()
    expected = sc.REFERENCES[program]([sc.peer_input(i) for i in range(N)])
    for check in ("run0", "run1"):
        peers = run.values(check)
        for got in peers:
            assert set(got) == set(expected), (check, sorted(got))
        for key, want in expected.items():
            harness.assert_exact([got[key] for got in peers], want, f"{check} {key}")


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_program_continues_on_a_completion_thread_not_an_engine_thread(pccl, concurrency):
    """Peer 0's wait is pending when XLA reaches it (peer 1 comes a second
    late), so it completes from the engine's side: the host callbacks after it
    must run on the communicator's completion threads ("pccl-completion"),
    never on the engine thread that ended the collective."""
    env = {i: {"PCCL_TEST_CONCURRENCY": str(concurrency)} for i in range(N)}
    run = harness.run_scenario(pccl, "continuation_thread", N, timeout=HANG_S, comm_timeout=10,
                               peer_env_extra=env)
    assert not run.problems, run.diagnostics()
    total = sum(sc.peer_input(i) for i in range(N))
    for check in ("run0", "run1"):
        peers = run.values(check)
        harness.assert_exact([p["out"] for p in peers], N * total, check)
        assert peers[0]["threads"] == ["pccl-completion"] * 2, peers[0]["threads"]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_close_cancels_a_blocked_continuation_and_joins(pccl, concurrency):
    """A completion thread blocked in a collective after the wait: close()
    from another thread cancels it, the program fails with CancelledError
    (well before the 30 s communicator timeout) and close() returns."""
    env = {i: {"PCCL_TEST_CONCURRENCY": str(concurrency)} for i in range(N)}
    run = harness.run_scenario(pccl, "close_during_continuation", N, timeout=HANG_S,
                               comm_timeout=30, peer_env_extra=env)
    assert not run.problems, run.diagnostics()
    closed = run.values("closed", peers=[0])[0]
    assert closed["error"] is not None, closed
    assert "CancelledError" in closed["error"]["message"], closed["error"]
    assert closed["elapsed"] < sc.CLOSE_AFTER_S + 8, closed
    assert not closed["closer_alive"] and closed["close_s"] < 5, closed
