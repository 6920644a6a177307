"""One source of truth for the codes that travel on the wire (#20): the
engine exports its reduce ops, dtypes, wire formats and sync strategies by
name (the bindings' REDUCE_OPS, DTYPES, QUANTIZATIONS, SYNC_STRATEGIES), and
the Python API accepts exactly those, with the engine's numbers."""
from __future__ import annotations

import numpy as np
import pytest

from jax_pccl import _pccl, shared_state, validation


def test_the_python_tables_are_the_engines():
    assert validation.REDUCE_OPS == _pccl.REDUCE_OPS
    assert set(_pccl.REDUCE_OPS) == {"sum", "avg", "min", "max", "prod"}
    assert validation.DTYPE_CODES == _pccl.DTYPES and len(set(_pccl.DTYPES.values())) == 12
    assert {validation.QUANTIZATIONS[None]} == {_pccl.QUANTIZATIONS["none"]}
    assert {k: v for k, v in validation.QUANTIZATIONS.items() if k} == {
        k: v for k, v in _pccl.QUANTIZATIONS.items() if k != "none"}
    assert shared_state.STRATEGIES == _pccl.SYNC_STRATEGIES
    # bool leaves of a shared state travel as uint8 bytes
    assert shared_state._DTYPE_CODES == {**_pccl.DTYPES, "bool": _pccl.DTYPES["uint8"]}


@pytest.mark.parametrize("name", sorted(_pccl.DTYPES))
def test_every_engine_dtype_passes_the_checks(name):
    import ml_dtypes  # jax's own dependency: bfloat16 for numpy

    dtype = np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)
    validation.check_dtypes([np.zeros(2, dtype)])


def test_a_name_the_engine_lacks_is_refused_with_the_engines_list():
    with pytest.raises(ValueError, match=r"op must be one of \['avg', 'max', 'min', 'prod', 'sum'\]"):
        validation.op_code("mean")
