"""Admission of 3 peers through update_topology (the harness's own precondition)."""
import numpy as np
import pytest

import cases
import harness


@pytest.mark.parametrize("join_mode", ["topology", "step"])
def test_three_peers_are_admitted_and_can_reduce(pccl, join_mode):
    """join_mode "topology": each peer loops `update_topology(); sleep` until world_size == 3.
    join_mode "step": `loop { all_reduce(scalar); update_topology() }`."""
    run = harness.run_scenario(pccl, "join_only", timeout=60, comm_timeout=10, join_mode=join_mode,
                               join_timeout=20)
    assert not run.problems, run.diagnostics()
    metas = [r["meta"] for r in run.reports]
    assert [m["world_size"] for m in metas] == [cases.N_PEERS] * cases.N_PEERS, metas
    assert sorted(m["rank"] for m in metas) == list(range(cases.N_PEERS)), f"ranks not a permutation: {metas}"
    stacked = np.stack([cases.small_ints("join_only", i, (5,), "float32") for i in range(cases.N_PEERS)])
    harness.assert_exact(run.values("sum"), cases.reference("sum", stacked, "float32"), "sum after join")
