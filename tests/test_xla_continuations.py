"""The rest of a jitted program after all_reduce_wait never runs on an engine
thread (issue #17, defect 1): programs with collectives after a completed wait
finish with exact results on 2 peer processes, with one slot and with several.

On the old code XLA ran the program's rest on the slot worker that completed
the wait; a later collective needing that slot waited for its own thread and
the group hung (heartbeats kept it alive). Each program is its own launch,
bounded by the harness's hard timeout, so a hang fails the test and is killed.
"""
import numpy as np
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
        for peer, got in enumerate(run.values(check)):
            assert set(got) == set(expected), (check, peer, sorted(got))
            for key, want in expected.items():
                np.testing.assert_array_equal(harness.decode(got[key]), want,
                                              err_msg=f"{check} peer {peer} {key}")
