"""Shared state keeps every leaf's shape, dtype and kind, and the pytree's
structure is compared across peers (issue #17, A8).

Real peer processes sync optax adam state (0-d int32 ``count``), bf16/f16
leaves, a 0-d leaf of every dtype (numpy array, numpy scalar, jax array),
empty leaves and nested dict/list/tuple/NamedTuple containers. What comes
back must have exactly the input's tree definition, shapes, dtypes and Python
types, and a second sync after an identical optimizer step moves nothing. A
peer with another structure alone gets CollectiveMismatchError naming the
difference; the others complete with their own content (refused_peers = 1).
"""
import numpy as np
import pytest

import harness
import state_structures


@pytest.fixture(scope="module")
def pccl():
    import jax_pccl
    return jax_pccl


def run(pccl, scenario, n=3):
    r = harness.run_scenario(pccl, scenario, n, timeout=150)
    assert not r.problems, r.diagnostics()
    return r


def assert_same_layout(got, want, what):
    for key in ("treedef", "shapes", "dtypes", "kinds"):
        assert got[key] == want[key], f"{what}: {key} changed:\n got {got[key]}\nwant {want[key]}"


@pytest.fixture(scope="module")
def layouts(pccl):
    return run(pccl, "state_layouts")


def test_received_leaves_keep_shape_dtype_and_kind(layouts):
    inputs = layouts.values("input")
    first = layouts.values("first")
    assert inputs[0]["shapes"].count([]) >= 3 * len(state_structures.ZERO_D_DTYPES), "0-d leaves"
    assert {"bfloat16", "float16", "bool"} <= set(inputs[0]["dtypes"])
    assert [0] in inputs[0]["shapes"] and [3, 0] in inputs[0]["shapes"], "empty leaves present"
    for i in range(3):
        assert_same_layout(first[i], inputs[i], f"peer {i} after the first sync")
        assert first[i]["hashes"] == inputs[0]["hashes"], f"peer {i} holds the elected content"
    differing = sum(a != b for a, b in zip(inputs[0]["hashes"], inputs[2]["hashes"]))
    assert differing > len(inputs[0]["hashes"]) // 2, f"seed 2 differs in most leaves ({differing})"
    assert first[2]["rx"] > 0 and first[0]["rx"] == first[1]["rx"] == 0
    assert all(v["revision"] == 3 and v["refused"] == 0 for v in first)


def test_adam_count_stays_0d_and_a_second_sync_moves_nothing(layouts):
    inputs = layouts.values("input")
    stepped = layouts.values("stepped")
    assert "namedtuple[ScaleByAdamState]" in inputs[0]["treedef"], "real optax state"
    for i in range(3):
        assert_same_layout(stepped[i], inputs[i], f"peer {i} after an adam step")
    assert len({tuple(v["hashes"]) for v in stepped}) == 1, "every peer computed the same step"
    second = layouts.values("second")
    for i in range(3):
        assert_same_layout(second[i], inputs[i], f"peer {i} after the second sync")
        assert (second[i]["tx"], second[i]["rx"]) == (0, 0), f"peer {i} moved bytes"
        assert second[i]["hashes"] == stepped[i]["hashes"]
        assert second[i]["revision"] == 4


ODD = {  # check -> what peer 2's error must name
    "keys": ["key names, container types or numpy dtypes"],
    "shape": ["float32(3,4) in this peer's state, float32(4,3) in the run's state",
              "['params']['w'] in this peer's pytree"],
    "dtype": ["bfloat16(2,2) in this peer's state, float16(2,2) in the run's state",
              "['params']['h'] in this peer's pytree"],
    "bool_for_uint8": ["numpy dtypes (bool travels as uint8)"],
    "leaf_count": ["this peer's state has"],
}


@pytest.fixture(scope="module")
def odd(pccl):
    return run(pccl, "state_odd_structure")


@pytest.mark.parametrize("check", list(ODD))
def test_odd_structure_refuses_that_peer_alone(odd, check):
    (err, elapsed), = odd.errors(check, peers=[2])
    assert "CollectiveMismatchError" in err["mro"], err
    assert "structure differs from the run's (held by 2 of 3 peers)" in err["message"], err
    for part in ODD[check]:
        assert part in err["message"], err
    assert elapsed < 10, f"refusal took {elapsed:.1f}s"
    revision = list(ODD).index(check) + 1
    base = odd.values(check, peers=[0, 1])
    for v in base:
        assert (v["revision"], v["refused"], v["tx"], v["rx"]) == (revision, 1, 0, 0), v
    for v, mine in zip(base, odd.values("input", peers=[0, 1])):
        assert v["hashes"] == mine["hashes"], "the others keep their own content"
        assert_same_layout(v, mine, "the others' state")


def test_refused_peer_catches_up_with_the_right_structure(odd):
    after = odd.values("after")
    assert all(v["hashes"] == odd.values("input", peers=[0])[0]["hashes"] for v in after)
    assert len({v["treedef"] for v in after}) == 1
    assert after[2]["rx"] > 0 and after[0]["rx"] == after[1]["rx"] == 0
    assert all(v["revision"] == len(ODD) + 1 and v["refused"] == 0 for v in after)


def test_structure_tie_fails_both_then_recovers(pccl):
    r = run(pccl, "state_structure_tie", n=2)
    after = r.values("after")
    leaves = len(after[0]["shapes"])
    for err, elapsed in r.errors("tie"):
        assert "CollectiveMismatchError" in err["mro"], err
        assert "none is held by more peers" in err["message"], err
        assert f"has {leaves} leaves" in err["message"], err
        assert f"has {leaves + 1} leaves" in err["message"], err
        assert elapsed < 10
    assert after[0]["hashes"] == after[1]["hashes"] and after[0]["revision"] == 1


def test_structure_digest_covers_names_and_numpy_dtypes(pccl):
    """No network: the digest's input differs exactly where peers must agree."""
    import jax
    from jax_pccl import state_structure

    def digest(tree):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        return state_structure.digest(treedef, [np.asarray(x) for x in leaves])
    a = {"a": np.zeros(3, np.uint8), "b": np.zeros((), np.float32)}
    assert digest(a) == digest({"a": np.ones(3, np.uint8), "b": np.ones((), np.float32)})
    assert digest(a) != digest({"x": a["a"], "b": a["b"]}), "key names"
    assert digest(a) != digest(dict(a, a=a["a"].astype(bool))), "bool vs uint8"
    assert digest(a) != digest(dict(a, b=a["b"].reshape(1))), "0-d vs (1,)"
    assert digest([1.0, 2.0]) != digest((1.0, 2.0)), "container types"
    pair = state_structures.Pair(left=np.zeros(2), right=np.zeros(2))
    assert digest(pair) != digest((np.zeros(2), np.zeros(2))), "NamedTuple vs tuple"
