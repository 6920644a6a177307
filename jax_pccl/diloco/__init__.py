"""DiLoCo with optax: local training, averaged pseudo-gradients, an outer optimizer.

Pure pieces (jit-friendly, any pytree, any optax GradientTransformation):
    outer_init, pseudo_gradient, apply_outer_update, outer_step, nesterov
Scheduling: Fragments (parameter fragments), Schedule (when each is synced)
The driver: DiLoCo(comm, outer, inner_steps=H, fragments=F, overlap=tau,
    quantization=...): sync, streaming and async DiLoCo with retries on peer
    failure and the run's state in the shared state (joiners catch up).
"""

try:
    import optax  # noqa: F401
except ModuleNotFoundError as exc:  # name the extra, not just the module
    raise ModuleNotFoundError(
        "jax_pccl.diloco needs optax: pip install 'jax_pccl[diloco]' (or pip install optax)",
        name=exc.name,
    ) from None

from .fragments import Fragments, Schedule  # noqa: E402
from .outer import OuterState, apply_outer_update, nesterov, outer_init, outer_step, pseudo_gradient
from .run import DiLoCo, DiLoCoState, SyncRecord

__all__ = [
    "DiLoCo",
    "DiLoCoState",
    "Fragments",
    "OuterState",
    "Schedule",
    "SyncRecord",
    "apply_outer_update",
    "nesterov",
    "outer_init",
    "outer_step",
    "pseudo_gradient",
]
