"""DiLoCo: the run's driver. Call ``step()`` after every inner step.

    run = diloco.DiLoCo(comm, diloco.nesterov(), inner_steps=100)
    params = run.init(params)             # a joiner receives the run's state here
    for batch in batches:
        params, opt_state = inner_step(params, opt_state, batch)   # any optax optimizer
        params = run.step(params)         # syncs whatever the schedule says is due

One driver, three shapes (see fragments.Schedule):
  sync       fragments=1, overlap=0        all_reduce + outer update every H steps
  streaming  fragments=F, overlap<=H//F    fragment p synced at k*H + (p+1)*H/F
  async      fragments=1, overlap=H        the outer update lands one outer step
                                           late; the next inner phase runs meanwhile
and any of them with ``quantization=`` on the pseudo-gradient's wire format.

With overlap > 0 the local params keep training while their fragment is in
flight. When the sync completes the fragment becomes
``new_global + (local_now - local_at_send)``: the progress made meanwhile is
kept, and is part of the next pseudo-gradient, so no inner step is lost or
counted twice.

The run's state (global params, one outer optimizer state per fragment, and a
cursor: inner step, position in that step's schedule, retrying flag) lives in
the communicator's shared state. It is synced at every outer-step boundary
(t a multiple of H, where no collective is in flight), right after
``update_topology()`` has admitted whoever waits. A joiner's ``init()``
receives it and resumes at the cursor; it takes part in every collective from
then on, with weight 0 until it has trained (see reduce.py), so it starts
contributing at its next sync.

A peer dying mid-sync makes the collective fail on every survivor; they call
``update_topology()`` (which also admits anyone waiting), sync the shared
state with the failed action in the cursor (so a peer admitted right then
joins the retry with weight 0), and run the collective again over the
survivors. Every peer runs the same collectives in the same order, and every
peer's state is bit-identical: ``state_digest()`` is a sha256 over it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import is_peer_failure
from ..retry import _recover, check_retry_args, is_master_unreachable
from ..validation import QUANTIZATIONS
from . import reduce
from .fragments import Fragments, Schedule
from .outer import nesterov

log = logging.getLogger("jax_pccl.diloco")



class DiLoCoState(NamedTuple):
    """What every peer holds bit-identically (the shared state).

    Attributes:
        params: the global params.
        opt_states: the outer optimizer's state, one per fragment.
        cursor: int64[3]: inner step t, action index in step t, retrying (0/1).
    """

    params: Any  # global params
    opt_states: tuple  # outer optimizer state, one per fragment
    cursor: Any  # int64[3]: inner step t, action index in step t, retrying (0/1)


@dataclass
class _InFlight:
    fragment: int
    sent_at: int
    payload: tuple  # (w * pseudo_grad, int32 w)
    local_at_send: Any  # the local fragment when it was sent
    bytes_before: int
    handles: Any = None  # from reduce.reduce_start
    result: Any = None  # (total, contributors) once known
    retries: int = 0


@dataclass
class SyncRecord:
    """One completed pseudo-gradient sync (one fragment, one outer step).

    Attributes:
        t: inner step at which it was sent.
        fragment: which fragment.
        contributors: peers with weight 1 in the average.
        payload_bytes: bytes of this peer's pseudo-gradient (in memory, before
            the wire format).
        bytes_sent: bytes this peer put on the wire between send and completion.
        retries: attempts redone after a peer failure.
        digest: ``state_digest()`` right after the outer update.
    """

    t: int  # inner step at which it was sent
    fragment: int
    contributors: int  # peers with weight 1 in the average
    payload_bytes: int  # bytes of this peer's pseudo-gradient (in memory, before the wire format)
    bytes_sent: int  # bytes this peer put on the wire between send and completion
    retries: int
    digest: str  # state_digest() right after the outer update


@dataclass
class Tally:
    syncs: list = field(default_factory=list)  # SyncRecord per completed sync
    state_syncs: list = field(default_factory=list)  # (revision, tx_bytes, rx_bytes) per shared-state sync
    recoveries: int = 0


class DiLoCo:
    """Drives DiLoCo over ``comm`` for one peer. See the module docstring.

    outer: any optax GradientTransformation (default: SGD lr 0.7, Nesterov
    momentum 0.9); it receives the averaged pseudo-gradient as its gradient.
    With fragments > 1 it runs on each fragment's flat parameter range.
    shared_state=False keeps the state local (no joiners can catch up).
    max_retries: how often a sync (or the recovery before it) is redone after
    a peer failure before the error propagates. master_grace (seconds; 0:
    none): a master outage is ridden out that long (update_topology() is
    retried while the master is away), as with retry_on_peer_failure.
    """

    def __init__(self, comm, outer: optax.GradientTransformation | None = None, *, inner_steps: int,
                 fragments: int = 1, overlap: int = 0, quantization: str | None = None,
                 shared_state: bool = True, max_retries: int = 8, master_grace: float = 0.0):
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {list(QUANTIZATIONS)}; got {quantization!r}")
        check_retry_args(max_retries, master_grace=master_grace)
        self.comm = comm
        self.outer = nesterov() if outer is None else outer
        self.schedule = Schedule(inner_steps, fragments, overlap)
        self.quantization = quantization
        self.shared_state = shared_state
        self.max_retries = max_retries
        self.master_grace = master_grace
        self.t = 0  # inner steps done (the run's clock, shared)
        self.revision = 0  # shared-state revision: +1 per sync
        self.tally = Tally()
        self.state: DiLoCoState | None = None
        self._fresh_at = 0  # the t at which local params were last set from the global ones
        self._pending: dict[int, _InFlight] = {}

    # -- public -------------------------------------------------------------
    def init(self, params):
        """Enters the run; returns the local params to train from.

        The first peers of a run start from ``params`` (identical on every
        peer); a later peer receives the run's global params, outer optimizer
        state and inner step here, and joins the collective the run is at."""
        self._frag = Fragments(params, self.schedule.fragments)
        self._build_functions()
        opt_states = tuple(self.outer.init(self._frag.gather(params, p))
                           for p in range(self.schedule.fragments))
        self.state = DiLoCoState(params, opt_states, np.array([0, -1, 0], np.int64))
        if self.shared_state:
            self._sync_state(cursor=None, first=True)
        t, action, retrying = (int(v) for v in np.asarray(self.state.cursor))
        self.t = self._fresh_at = t
        local = self.state.params
        if retrying:  # admitted while the run retries action `action` of step t
            local = self._join_retry(t, action, local)
        return self._run_actions(t, action + 1, local)

    def step(self, local_params):
        """Call after every inner step; returns the (possibly updated) local params."""
        self.t += 1
        return self._run_actions(self.t, 0, local_params)

    def finish(self, local_params):
        """Completes the syncs still in flight; returns (global params, local params).

        Every peer must call it at the same inner step (a peer admitted
        while the others are in finish() is not supported). It ends with a
        barrier (a tiny all_reduce whose failure is ignored): a peer that
        leaves right after its last sync could otherwise cut a neighbour off
        while that one still receives the end of it."""
        for p in sorted(self._pending, key=lambda p: self._pending[p].sent_at):
            local_params = self._complete(self.t, -1, p, local_params)
        try:
            reduce.barrier(self.comm)
        except Exception as exc:  # noqa: BLE001 - everyone already holds the final state
            if not is_peer_failure(exc):
                raise
        return self.state.params, local_params

    @property
    def global_params(self):
        """The run's global params, as of the last completed outer step."""
        return self.state.params

    def state_digest(self) -> str:
        """sha256 over the bytes of the global params and outer optimizer states."""
        h = hashlib.sha256()
        for leaf in jax.tree_util.tree_leaves((self.state.params, self.state.opt_states)):
            a = np.ascontiguousarray(np.asarray(leaf))
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()

    # -- the schedule -------------------------------------------------------
    def _actions(self, t: int) -> list[tuple[str, int]]:
        s = self.schedule
        acts = [("wait", p) for p in s.waits_at(t)]
        if s.is_boundary(t):
            acts.append(("boundary", -1))
        return acts + [("send", p) for p in s.sends_at(t)]

    def _run_actions(self, t: int, start: int, local):
        actions = self._actions(t)
        for i in range(start, len(actions)):
            kind, p = actions[i]
            if kind == "wait":
                local = self._complete(t, i, p, local)
            elif kind == "boundary":
                local = self._boundary(t, i, local)
            else:
                local = self._send(t, i, p, local)
        return local

    # -- actions ------------------------------------------------------------
    def _send(self, t: int, i: int, p: int, local):
        weight = 1.0 if t > self._fresh_at else 0.0  # joiners add nothing until they trained
        scaled, local_part = self._payload[p](self.state.params, local, weight)
        flight = _InFlight(p, t, (scaled, np.asarray(int(weight), np.int32)), local_part,
                           self._bytes_sent())
        self._pending[p] = flight
        if self.schedule.overlap == 0:
            return self._complete(t, i, p, local)
        try:
            flight.handles = reduce.reduce_start(flight.payload, self.comm, self.quantization)
        except Exception as exc:  # noqa: BLE001 - only peer failures are retried
            self._retry_blocking(flight, t, i, exc)
        return local

    def _complete(self, t: int, i: int, p: int, local):
        flight = self._pending.pop(p)
        if flight.result is None and flight.handles is not None:
            try:
                flight.result = reduce.reduce_wait(flight.handles)
            except Exception as exc:  # noqa: BLE001
                flight.handles = None
                self._retry_blocking(flight, t, i, exc)
        if flight.result is None:
            self._retry_blocking(flight, t, i, None)
        total, contributors = flight.result
        params, opt_states, local = self._apply[p](self.state.params, self.state.opt_states, local,
                                                   total, contributors, flight.local_at_send)
        self.state = DiLoCoState(params, tuple(opt_states), self.state.cursor)
        self.tally.syncs.append(SyncRecord(
            t=flight.sent_at, fragment=p, contributors=int(contributors),
            payload_bytes=sum(int(np.asarray(x).nbytes) for x in jax.tree_util.tree_leaves(flight.payload[0])),
            bytes_sent=self._bytes_sent() - flight.bytes_before, retries=flight.retries,
            digest=self.state_digest()))
        return local

    def _boundary(self, t: int, i: int, local):
        self._update_topology()
        if self.shared_state:
            before = self.state_digest()
            self._sync_state(cursor=(t, i, 0))
            if self.state_digest() != before:
                # This peer's global state was not the run's (it should never
                # be): start over from the run's, contributing from next time.
                log.warning("outer state differed from the run's at t=%d; resetting local params", t)
                local = self.state.params
                self._fresh_at = t
        return local

    def _join_retry(self, t: int, i: int, local):
        kind, p = self._actions(t)[i]
        assert kind in ("wait", "send"), kind
        _, local_part = self._payload[p](self.state.params, local, 0.0)
        scaled = jax.tree_util.tree_map(jnp.zeros_like, local_part)
        sent_at = t if kind == "send" else t - self.schedule.overlap
        flight = _InFlight(p, sent_at, (scaled, np.asarray(0, np.int32)), local_part, self._bytes_sent())
        self._retry_blocking(flight, t, i, None)
        self._pending[p] = flight
        if kind == "wait" or self.schedule.overlap == 0:
            local = self._complete(t, i, p, local)
        return local

    # -- failures -----------------------------------------------------------
    def _retry_blocking(self, flight: _InFlight, t: int, i: int, exc) -> None:
        """Runs the fragment's reduction as a blocking collective, recovering
        (update_topology + shared-state sync) before each attempt after a failure."""
        while True:
            if exc is not None:
                if not self._retryable(exc) or flight.retries >= self.max_retries:
                    raise exc
                flight.retries += 1
                log.warning("sync of fragment %d failed (attempt %d): %s; recovering",
                            flight.fragment, flight.retries, exc)
                self._recover(t, i)
            try:
                flight.result = reduce.reduce_blocking(flight.payload, self.comm, self.quantization)
                return
            except Exception as e:  # noqa: BLE001
                exc = e

    def _recover(self, t: int, i: int) -> None:
        self.tally.recoveries += 1
        self._update_topology()
        if self.shared_state:
            self._sync_state(cursor=(t, i, 1))

    def _retryable(self, exc) -> bool:
        # With master_grace > 0 a master outage is recovered from like a peer
        # failure (as retry_on_peer_failure does): before, the first
        # MasterUnreachableError of a boundary's update_topology() or of a
        # sync propagated, and the grace only applied to an outage that
        # followed a peer failure.
        return is_peer_failure(exc) or (self.master_grace > 0 and is_master_unreachable(exc))

    def _update_topology(self) -> None:
        try:
            self.comm.update_topology()
        except Exception as exc:  # noqa: BLE001
            if not self._retryable(exc):
                raise
            _recover(self.comm, self.max_retries, 0.05, self.master_grace)

    def _sync_state(self, cursor, first: bool = False) -> None:
        state = self.state
        if cursor is not None:
            state = state._replace(cursor=np.asarray(cursor, np.int64))
        revision = self.revision if first else self.revision + 1
        for attempt in range(self.max_retries + 1):
            try:
                state, info = self.comm.sync_shared_state(state, revision=revision)
                break
            except Exception as exc:  # noqa: BLE001
                if not self._retryable(exc) or attempt == self.max_retries:
                    raise
                self.tally.recoveries += 1
                _recover(self.comm, self.max_retries, 0.05, self.master_grace)
        self.revision = int(info.revision)
        self.tally.state_syncs.append((int(info.revision), int(info.tx_bytes), int(info.rx_bytes)))
        self.state = DiLoCoState(state.params, tuple(state.opt_states), np.asarray(state.cursor, np.int64))

    def _bytes_sent(self) -> int:
        return int(self.comm.stats()["bytes_sent"])

    # -- jitted pieces ------------------------------------------------------
    def _build_functions(self) -> None:
        frag, outer, overlap = self._frag, self.outer, self.schedule.overlap

        def payload(global_params, local, weight, *, p):
            g, l = frag.gather(global_params, p), frag.gather(local, p)
            scaled = jax.tree_util.tree_map(lambda a, b: (a - b) * jnp.asarray(weight, a.dtype), g, l)
            return scaled, l

        def apply(params, opt_states, local, total, contributors, local_at_send, *, p):
            g = frag.gather(params, p)
            updates, opt_state = outer.update(reduce.mean(total, contributors), opt_states[p], g)
            new_g = optax.apply_updates(g, updates)
            nobody = contributors == 0  # no update at all, not even momentum
            new_g = jax.tree_util.tree_map(lambda new, old: jnp.where(nobody, old, new), new_g, g)
            opt_state = jax.tree_util.tree_map(lambda new, old: jnp.where(nobody, old, new),
                                               opt_state, opt_states[p])
            if overlap == 0:
                new_local = new_g
            else:  # keep the progress made while the fragment was in flight
                new_local = jax.tree_util.tree_map(lambda n, now, sent: n + (now - sent),
                                                   new_g, frag.gather(local, p), local_at_send)
            opt_states = tuple(opt_state if q == p else s for q, s in enumerate(opt_states))
            return frag.scatter(params, p, new_g), opt_states, frag.scatter(local, p, new_local)

        n = self.schedule.fragments
        self._payload = [jax.jit(functools.partial(payload, p=p)) for p in range(n)]
        self._apply = [jax.jit(functools.partial(apply, p=p)) for p in range(n)]
