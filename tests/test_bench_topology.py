"""bench/topology.py's own logic, without a lab: the drawn matrix has what
the benchmark's verdicts rely on, and the exhaustive reference finds the ring
a planner should find."""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))
spec = importlib.util.spec_from_file_location("bench_topology", os.path.join(REPO_ROOT, "bench", "topology.py"))
topology = importlib.util.module_from_spec(spec)
spec.loader.exec_module(topology)


def args(seed: int, hosts: int = 6) -> argparse.Namespace:
    return argparse.Namespace(seed=seed, hosts=hosts, fast=1000.0, slow=100.0, slow_share=0.5,
                              rtt_min=10.0, rtt_max=150.0)


def test_every_draw_has_a_fast_ring_and_a_join_order_that_misses_it():
    for seed in range(50):
        a = args(seed)
        links = topology.draw_links(a)
        assert len(links) == 15 and all(10 <= rtt <= 150 for rtt, _ in links.values())
        fast = lambda i, j: topology.configured(links, i, j)[1] == a.fast  # noqa: E731
        rings = ([1, *p] for p in itertools.permutations(range(2, 7)))
        assert any(all(fast(r[k], r[(k + 1) % 6]) for k in range(6)) for r in rings), seed
        assert not all(fast(i, i % 6 + 1) for i in range(1, 7)), seed
    assert topology.draw_links(args(7)) == topology.draw_links(args(7))  # seeded


def test_the_exhaustive_reference_minimises_the_slowest_hop_then_the_sum():
    # A ring 1-3-2-4 of cost-1 links; every other link costs 5; 1->3 is a bit dearer
    # than 3->1, so the direction 1,4,2,3 (using 3->1) has the least sum.
    cost = {(i, j): 5.0 for i in range(1, 5) for j in range(1, 5) if i != j}
    for i, j in [(1, 3), (3, 2), (2, 4), (4, 1)]:
        cost[(i, j)] = cost[(j, i)] = 1.0
    cost[(1, 3)] = 1.5
    assert topology.best_ring([1, 2, 3, 4], cost) == [1, 4, 2, 3]
    assert topology.ring_cost([1, 4, 2, 3], cost) == (1.0, 4.0)
    assert topology.same_ring([2, 3, 1, 4], [1, 4, 2, 3]) and not topology.same_ring([1, 3, 2, 4], [1, 4, 2, 3])
    # A missing figure counts as unusable, never as free.
    del cost[(4, 1)]
    assert topology.ring_cost([1, 3, 2, 4], cost)[0] == float("inf")
