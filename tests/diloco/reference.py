"""DiLoCo written out by hand in float64 numpy, as the papers state it.

- pseudo-gradient of peer i for a fragment: global - local_i
- outer step: Nesterov SGD on the peers' mean pseudo-gradient
      m <- g + mu * m;   global <- global - lr * (g + mu * m)
- sync: every H inner steps; each peer restarts from the new global params
- streaming: fragment p (a contiguous range of the flat params) is sent at
  t = k*H + floor((p+1)*H/F) and completed `overlap` steps later
- async (overlap = H): the update completes one outer step late; a fragment
  completed after overlap steps becomes new_global + (local_now - local_sent)
"""
from __future__ import annotations

import numpy as np

import problem


def nesterov_step(global_part, momentum, grad, lr=problem.OUTER_LR, mu=problem.OUTER_MOMENTUM):
    momentum = grad + mu * momentum
    return global_part - lr * (grad + mu * momentum), momentum


def simulate(n_peers: int, steps: int, inner_steps: int, fragments: int = 1, overlap: int = 0):
    """Returns (final global params, [(t sent, fragment)], {t sent: global after that sync})."""
    H, F = inner_steps, fragments
    x0 = problem.flat(problem.initial_params())
    targets = [problem.flat(problem.target(i)) for i in range(n_peers)]
    glob, momentum = x0.copy(), np.zeros_like(x0)
    local = [x0.copy() for _ in range(n_peers)]
    bounds = np.linspace(0, x0.size, F + 1).round().astype(int)
    offsets = [((p + 1) * H) // F for p in range(F)]
    in_flight, sent_log, after = {}, [], {}

    def sends(t):
        return [p for p in range(F) if t >= offsets[p] and (t - offsets[p]) % H == 0]

    def complete(p):
        t_sent, pseudo, snapshots = in_flight.pop(p)
        s = slice(bounds[p], bounds[p + 1])
        glob[s], momentum[s] = nesterov_step(glob[s], momentum[s], np.mean(pseudo, axis=0))
        for i in range(n_peers):
            local[i][s] = glob[s] if overlap == 0 else glob[s] + (local[i][s] - snapshots[i])
        after[t_sent] = glob.copy()

    for t in range(1, steps + 1):
        for i in range(n_peers):
            local[i] -= problem.INNER_LR * (local[i] - targets[i])
        for p in (sends(t - overlap) if overlap else []):
            complete(p)
        for p in sends(t):
            s = slice(bounds[p], bounds[p + 1])
            in_flight[p] = (t, [glob[s] - local[i][s] for i in range(n_peers)],
                            [local[i][s].copy() for i in range(n_peers)])
            sent_log.append((t, p))
            if overlap == 0:
                complete(p)
    for p in sorted(in_flight, key=lambda q: in_flight[q][0]):
        complete(p)
    return glob, sent_log, after
