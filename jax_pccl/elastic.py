"""Elastic data parallelism: one optimizer step at a time, over whoever is in the run.

    comm = pccl.Communicator.from_env().connect()
    trainer = pccl.DataParallel(comm, loss_fn, optax.adam(1e-3), min_peers=2)
    trainer.init(params)              # a joiner receives the run's state here
    while trainer.step_count < 1000:  # the run's step count, the same on every peer
        loss = trainer.step(next_batch())

Each ``step()`` computes this peer's gradient, averages it over every peer
(``all_reduce(op="avg")`` inside one jitted function) and applies the
optimizer update, so every peer applies the same update to the same state:
params, optimizer state and step count stay bit-identical everywhere.

The step boundary (start of every ``step()``) is where membership changes:

    loop:
        update_topology()                 admits whoever waits, drops the dead
        if the epoch changed since the last shared-state sync:
            sync {params, opt_state, step}; back to the top
        if fewer than min_peers: wait for more (or raise QuorumError); back to the top
        break

A joiner's ``init()`` is that same sync, and its first ``step()`` starts with
the ``update_topology()`` that follows it on the others, so a newcomer
admitted at any ``update_topology()`` (a boundary, a quorum wait, the recovery
after a failure) runs the same collectives in the same order as everyone
else, and receives the run's state before it trains.

The sync first agrees on the highest step count any peer holds (a tiny
all_reduce): peers at it vote their content, the others only receive. That
covers a step that completed on some peers and failed on others (a peer died
at its very end): its result survives, whole, and the peers that saw the
failure take it instead of redoing the step (their ``step()`` returns right
after that sync, so their next call's ``update_topology()`` is the one the
others run after it). The shared state's revision counts syncs (the master
lets it grow by one per sync, and syncs happen only at membership changes);
the step count is the ``step`` leaf.

A peer failure during the step (eager ``PeerFailureError`` or a jitted
``JaxRuntimeError`` naming it) sends every survivor back to the boundary:
``update_topology()`` drops the dead peer, the state is synced again (the
epoch changed), and the same step runs again with the same batch over the
survivors and anyone admitted meanwhile. Inputs of a failed collective are
never modified, so the redone step is exactly what the first attempt would
have been over those peers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .communicator import Communicator
from .errors import QuorumError, is_peer_failure
from .ops.all_reduce import all_reduce
from .retry import _recover

log = logging.getLogger("jax_pccl.elastic")

# How often a peer below min_peers says that it waits, and how often it
# looks for newcomers meanwhile.
WAIT_LOG_EVERY_S = 5.0
QUORUM_POLL_S = 0.1
BELOW_MIN = ("wait", "stop")


class DataParallel:
    """Data-parallel training over ``comm`` that survives joins, leaves and failures.

    The sibling of ``jax_pccl.diloco.DiLoCo`` for plain data parallelism: one
    gradient all-reduce per step. See the module docstring for the protocol.

    The trainer calls ``comm.update_topology()`` itself, at every step
    boundary: do not call it (or ``sync_shared_state``) on the same ``comm``
    in the training loop, or a newcomer's sequence of collectives would no
    longer line up with the others'. Collectives of your own between steps
    are fine when every peer, a newcomer included, makes them at the same
    ``step_count``.

    The run's state lives in its peers only: if every peer is gone, the next
    one to connect starts a new run from its own ``init()`` params at step 0
    (checkpoint ``params``, ``opt_state`` and ``step_count`` to survive that).

    Args:
        comm: a connected ``Communicator``.
        loss_fn: ``loss_fn(params, batch) -> loss`` (a scalar), or
            ``-> (loss, aux)`` with ``has_aux=True``; traced by ``jax.jit``.
        optimizer: any optax ``GradientTransformation`` (anything with
            ``init(params)`` and ``update(grads, state, params)``).
        min_peers: the fewest peers of this peer's group that may take a
            step. Below it, no step is taken (see ``below_min``). Peers
            should agree on it; where they do not, the largest value among
            the peers in the run applies to all of them (so that they all
            decide alike), with a warning.
        below_min: ``"wait"``: keep admitting newcomers and go on once there
            are ``min_peers`` again, logging a warning on the
            ``jax_pccl.elastic`` logger every few seconds while waiting;
            ``"stop"``: raise ``QuorumError`` at once.
        wait_timeout: with ``below_min="wait"``, the longest wait in seconds
            (None: as long as it takes). The waiting peers decide together:
            all of them raise ``QuorumError`` once any one's wait has
            exceeded it.
        has_aux: ``loss_fn`` returns ``(loss, aux)``; ``step()`` returns it.
        max_retries: the most peer failures one ``step()`` (or ``init()``)
            recovers from before it raises the last one.

    Raises:
        TypeError: ``comm`` is not a Communicator, ``loss_fn`` is not
            callable, ``optimizer`` lacks ``init``/``update``, ``has_aux``
            is not a bool.
        ValueError: ``min_peers``, ``below_min``, ``wait_timeout`` or
            ``max_retries`` is out of range (the message names it).
    """

    def __init__(self, comm: Communicator, loss_fn: Callable, optimizer: Any, *,
                 min_peers: int = 1, below_min: str = "wait", wait_timeout: float | None = None,
                 has_aux: bool = False, max_retries: int = 8):
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a jax_pccl.Communicator, got {type(comm).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if not (callable(getattr(optimizer, "init", None))
                and callable(getattr(optimizer, "update", None))):
            raise TypeError("optimizer must be an optax GradientTransformation (with init and "
                            f"update), got {type(optimizer).__name__}")
        if not _is_int(min_peers) or min_peers < 1:
            raise ValueError(f"min_peers must be a positive int, got {min_peers!r}")
        if below_min not in BELOW_MIN:
            raise ValueError(f"below_min must be 'wait' or 'stop', got {below_min!r}")
        if wait_timeout is not None and (isinstance(wait_timeout, bool)
                                         or not isinstance(wait_timeout, (int, float))
                                         or not wait_timeout > 0):
            raise ValueError("wait_timeout must be None or a positive number of seconds, "
                             f"got {wait_timeout!r}")
        if not isinstance(has_aux, bool):
            raise TypeError(f"has_aux must be a bool, got {type(has_aux).__name__}")
        if not _is_int(max_retries) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative int, got {max_retries!r}")
        self.comm = comm
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.min_peers = min_peers
        self.below_min = below_min
        self.wait_timeout = None if wait_timeout is None else float(wait_timeout)
        self.has_aux = has_aux
        self.max_retries = max_retries
        self._params = self._opt_state = None
        self._step = 0
        self._world = 0
        self._quorum = min_peers  # the run's min_peers: the largest of its peers'
        self._revision = 0  # shared-state revision: +1 per sync
        self._synced_epoch = None  # comm's epoch at the last shared-state sync
        self._retries = 0
        self._joined = False
        self._train_step = self._eval_loss = None

    # -- public -------------------------------------------------------------
    def init(self, params: Any) -> None:
        """Enters the run with ``params``; every peer calls it once, after ``connect()``.

        The peers that start a run together begin from ``params`` (give them
        all the same: where they differ, the shared-state election picks one
        per leaf). A peer joining a run that is under way receives the run's
        params, optimizer state and step count here instead. Collective: the
        others take part from their next step boundary.

        Args:
            params: any pytree of arrays (jax or numpy).

        Raises:
            RuntimeError: ``init()`` was called already.
            PeerFailureError: more than ``max_retries`` peer failures.
            PcclError: from the shared-state sync (e.g. this peer's params
                or optimizer state have another structure than the run's).
        """
        if self._joined:
            raise RuntimeError("DataParallel.init() was called already")
        params = jax.tree_util.tree_map(jnp.asarray, params)
        self._params, self._opt_state = params, self.optimizer.init(params)
        self._train_step = jax.jit(self._make_train_step())
        failures = 0
        while True:
            try:
                self._sync(revision=self._revision)
                self._joined = True
                return
            except Exception as exc:  # noqa: BLE001 - only peer failures are retried
                failures = self._failed(exc, failures, "joining the run")
            self._update_topology()  # what the others do next, too

    def step(self, batch: Any) -> Any:
        """One optimizer step over every peer; returns this peer's loss.

        Runs the step boundary (admits newcomers, drops dead peers, syncs the
        state after a membership change, applies the ``min_peers`` rule),
        then the jitted step: this peer's gradient on ``batch``, averaged
        over all peers, and the optimizer update. After a peer failure it
        recovers and takes the same step again with the same ``batch`` over
        the survivors.

        Args:
            batch: this peer's batch, any pytree ``loss_fn`` accepts.

        Returns:
            Any: this peer's loss on ``batch`` before the update (a jax
            scalar), or ``(loss, aux)`` with ``has_aux``.

        Raises:
            RuntimeError: ``init()`` was not called.
            QuorumError: fewer than ``min_peers`` peers, with
                ``below_min="stop"`` or past ``wait_timeout``.
            PeerFailureError: more than ``max_retries`` peer failures in this
                call (a jitted failure surfaces as ``jax.errors.JaxRuntimeError``).
            PcclError: any other error of the run (e.g. the master is gone).
        """
        if not self._joined:
            raise RuntimeError("call DataParallel.init(params) before step()")
        target = self._step
        params = self._params
        failures = 0
        while True:
            failures = self._boundary(failures, target)
            if self._step > target:
                # The step completed on a peer that survived while it failed
                # here; the sync brought its result, which includes this
                # peer's gradient (it was sent). Do not take it twice.
                log.warning("step %d completed on other peers while it failed here; took "
                            "their result", target + 1)
                return self._loss_only(params, batch)
            try:
                new_params, new_opt_state, out, world = jax.block_until_ready(
                    self._train_step(self._params, self._opt_state, batch))
                break
            except Exception as exc:  # noqa: BLE001 - only peer failures are retried
                failures = self._failed(exc, failures, f"step {target + 1}")
        self._params, self._opt_state = new_params, new_opt_state
        self._step += 1
        self._world = int(world)
        return out

    @property
    def params(self):
        """The current params (bit-identical on every peer)."""
        return self._params

    @property
    def opt_state(self):
        """The current optimizer state (bit-identical on every peer)."""
        return self._opt_state

    @property
    def step_count(self) -> int:
        """Steps the run has taken (a joiner learns it in ``init()``)."""
        return self._step

    @property
    def world_size(self) -> int:
        """Peers that took part in this peer's last step (0 before its first)."""
        return self._world

    @property
    def retries(self) -> int:
        """Peer failures this peer has recovered from so far (all calls)."""
        return self._retries

    def digest(self) -> str:
        """A sha256 (hex) over params, optimizer state and step count.

        Equal on every peer after every step; meant for checks and logs.

        Returns:
            str: 64 hex digits.
        """
        h = hashlib.sha256()
        for leaf in jax.tree_util.tree_leaves((self._params, self._opt_state)):
            a = np.ascontiguousarray(np.asarray(leaf))
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        h.update(np.int64(self._step).tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (f"DataParallel(step_count={self._step}, world_size={self._world}, "
                f"min_peers={self.min_peers}, below_min={self.below_min!r})")

    # -- the step boundary --------------------------------------------------
    def _boundary(self, failures: int, target: int) -> int:
        waiting_since = next_log = None
        while True:
            self._update_topology()
            if self._epoch() != self._synced_epoch:
                try:
                    self._sync(revision=self._revision + 1)
                except Exception as exc:  # noqa: BLE001
                    failures = self._failed(exc, failures, "the shared-state sync")
                if self._step > target:
                    # This peer's step `target + 1` was taken: step() returns,
                    # and the next step() call's update_topology() is the one
                    # the others run next (here, after the sync).
                    return failures
                continue  # settle: an update_topology() follows every sync
            peers = self.comm.group_world_size
            if peers >= self._quorum:
                if waiting_since is not None:
                    log.warning("jax_pccl: %d peers in group %d again (min_peers=%d); "
                                "training resumes at step %d", peers, self.comm.peer_group,
                                self._quorum, self._step + 1)
                return failures
            if self.below_min == "stop":
                raise QuorumError(self._quorum_message(peers) + "; below_min='stop' ends "
                                  "the run here (below_min='wait' waits for peers to join)")
            now = time.monotonic()
            if waiting_since is None:
                waiting_since = next_log = now
            if now >= next_log:
                log.warning("jax_pccl: %s; waiting for peers to join before step %d "
                            "(%.0f s so far%s)", self._quorum_message(peers), self._step + 1,
                            now - waiting_since,
                            "" if self.wait_timeout is None else f", wait_timeout={self.wait_timeout:g} s")
                next_log = now + WAIT_LOG_EVERY_S
            mine = self.wait_timeout is not None and now - waiting_since >= self.wait_timeout
            expired = mine
            if peers > 1:  # the waiting peers decide together, so they all stop or none
                try:
                    expired = _agree_max([int(mine)], self.comm)[0] > 0
                except Exception as exc:  # noqa: BLE001
                    failures = self._failed(exc, failures, "the quorum wait")
                    continue
            if expired:
                whose = (f"wait_timeout={self.wait_timeout:g} s" if mine else
                         f"the wait_timeout of another waiting peer (this one waited "
                         f"{now - waiting_since:.0f} s)")
                raise QuorumError(f"{self._quorum_message(peers)}, and nobody joined within {whose}")
            time.sleep(QUORUM_POLL_S)

    def _quorum_message(self, peers: int) -> str:
        return (f"{peers} peer{'s' if peers != 1 else ''} in group {self.comm.peer_group}, "
                f"min_peers={self._quorum} needed")

    def _sync(self, revision: int) -> None:
        """Makes {params, opt_state, step} the run's on every peer: the peers
        at the highest step count vote, the others only receive."""
        top, quorum = _agree_max([self._step, self.min_peers], self.comm)
        if quorum != self._quorum and quorum != self.min_peers:
            log.warning("another peer of the run has min_peers=%d (this one: %d): the run "
                        "applies %d", quorum, self.min_peers, quorum)
        self._quorum = quorum
        strategy = "enforce_popular" if self._step == top else "receive_only"
        state = {"params": self._params, "opt_state": self._opt_state,
                 "step": np.asarray(self._step, np.int64)}
        state, info = self.comm.sync_shared_state(state, revision=revision, strategy=strategy)
        if info.rx_bytes or int(state["step"]) != self._step:
            log.info("received the run's state at step %d (%d bytes, %d peers)",
                     int(state["step"]), info.rx_bytes, self.comm.group_world_size)
        self._params, self._opt_state = state["params"], state["opt_state"]
        self._step = int(state["step"])
        self._revision = int(info.revision)
        self._synced_epoch = self._epoch()

    def _update_topology(self) -> None:
        try:
            self.comm.update_topology()
        except Exception as exc:  # noqa: BLE001
            if not is_peer_failure(exc):
                raise
            _recover(self.comm, self.max_retries, 0.05, 0.0)

    def _failed(self, exc: Exception, failures: int, what: str) -> int:
        """Counts a peer failure (re-raising anything else, or one too many)."""
        if not is_peer_failure(exc) or failures >= self.max_retries:
            raise exc
        self._retries += 1
        log.warning("%s failed (attempt %d of %d): %s; recovering over the survivors",
                    what, failures + 1, self.max_retries + 1, str(exc).strip().splitlines()[0])
        return failures + 1

    def _epoch(self) -> int:
        return int(self.comm.stats()["epoch"])

    # -- jitted pieces ------------------------------------------------------
    def _make_train_step(self):
        grad_fn = jax.value_and_grad(self.loss_fn, has_aux=self.has_aux)
        comm, optimizer = self.comm, self.optimizer

        def train_step(params, opt_state, batch):
            out, grads = grad_fn(params, batch)
            grads, info = all_reduce(grads, comm, op="avg", return_info=True)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return _apply_updates(params, updates), opt_state, out, info.world_size

        return train_step

    def _loss_only(self, params, batch):
        if self._eval_loss is None:
            self._eval_loss = jax.jit(self.loss_fn)
        return self._eval_loss(params, batch)


def _agree_max(values: list[int], comm: Communicator) -> list[int]:
    """Element by element, the largest ``values`` any peer of the group passes
    (a collective: every peer passes as many)."""
    if not all(0 <= v < 2**31 for v in values):
        raise ValueError(f"{values} out of range (int32)")
    return [int(v) for v in np.asarray(all_reduce(np.asarray(values, np.int32), comm, op="max"))]


def _apply_updates(params, updates):
    # optax.apply_updates, without importing optax here.
    return jax.tree_util.tree_map(
        lambda p, u: None if p is None else jnp.asarray(p + u).astype(jnp.asarray(p).dtype),
        params, updates, is_leaf=lambda x: x is None)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
