"""Loads the native engine and registers its XLA FFI targets (once)."""

from __future__ import annotations

import threading

import jax

from . import _pccl  # noqa: F401  (the compiled nanobind module)

_lock = threading.Lock()
_registered = False


def ensure_ffi_registered() -> None:
    """Registers our custom-call targets with XLA's CPU platform.

    Must run after the CPU backend exists, hence the jax.devices call.
    """
    global _registered
    if _registered:
        return
    with _lock:
        if _registered:
            return
        jax.devices("cpu")
        for name, capsule in _pccl.ffi_targets().items():
            jax.ffi.register_ffi_target(name, capsule, platform="cpu", api_version=1)
        if _pccl.CUDA_BUILT and _has_cuda_backend():
            for name, capsule in _pccl.ffi_targets_cuda().items():
                jax.ffi.register_ffi_target(name, capsule, platform="CUDA", api_version=1)
        _registered = True


def _has_cuda_backend() -> bool:
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:  # no CUDA plugin or no GPU
        return False
