"""Random collective programs for the JAX layer: generator, builder, numpy reference.

A *program* is a small straight-line list of statements over named values,
regenerated identically by every process from (seed, index):

  ar     y.. = all_reduce(args.., op)            (tuple / dict / single-leaf pytree)
  start  h   = all_reduce_start(args.., op)       (several may be in flight)
  wait   y.. = all_reduce_wait(h)                 (any order; waits may come
                                                   long after other collectives)
  mix    y   = clip(a + first_element(b))         (a fresh input and any value,
                                                   e.g. a wait's result: the next
                                                   start depends on the previous wait)
  scan   ys  = lax.scan over L rows, each row all_reduce'd (or start+wait'ed)
  cond   y   = lax.cond(pred, collective op1, collective op2)   (pred the same on
                                                   every peer, passed at run time)

With kinds=True, 1-3 statements of the other collectives are inserted at
random places (drawn from a second random stream, so the statements above
are those of kinds=False, which the regression seeds replay):

  gather y   = sum over rows of all_gather(x)     (rows in rank order)
  rs     y   = reduce_scatter(x stacked world times, op)[0]
  bcast  y   = broadcast(all_reduce(x, op), root=0)

Their results do not depend on ranks, so the reference needs none; their
shapes depend on the group size, so programs are traced once per size.

Handles still open at the end are either waited for inside the same function
(in a random order) or returned from it and waited for by a second jitted
function (the pipelined pattern: a handle crosses jit boundaries).

Every collective operand is clipped to a small integer range and rounded to an
integer first (an `avg` result can be fractional), so each
result is an exactly representable small integer (|x| <= 27) in every dtype
(bfloat16 and int8 included) and the numpy reference is exact. `avg` follows
the documented semantics: integers truncate toward zero; floating types sum
exactly, divide once in float32 (float64 for float64) and round once to the
dtype.

numpy-only (plus jax in `build`), deterministic, JSON-serialisable programs.
"""
from __future__ import annotations

import hashlib
import random

import ml_dtypes
import numpy as np

OPS = ("sum", "avg", "min", "max", "prod")
FLOATS = ("float32", "float64", "float16", "bfloat16")
SIGNED = ("int8", "int16", "int32", "int64")
UNSIGNED = ("uint8", "uint16", "uint32", "uint64")
DTYPES = FLOATS + SIGNED + UNSIGNED
SHAPES = ((), (1,), (3,), (2, 3), (5,), (3, 1, 2), (4, 4))
HI = 3  # operands are clipped to [LO, HI]; n <= 3 peers: |prod| <= 27, fits int8


def np_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def lo_of(dtype: str) -> int:
    return 0 if dtype in UNSIGNED else -HI


# --- generation ----------------------------------------------------------------

def generate(seed: int, index: int, max_stmts: int = 7, kinds: bool = False) -> dict:
    """The program description for (seed, index): plain JSON data."""
    rng = random.Random(f"pccl-program:{seed}:{index}")
    values: dict[str, dict] = {}  # id -> {"dtype", "shape"}
    inputs: list[str] = []
    stmts: list[dict] = []
    open_handles: list[str] = []
    handle_specs: dict[str, list[str]] = {}
    produced: list[str] = []
    counter = [0]

    def new_id(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def fresh_input(dtype=None, shape=None) -> str:
        vid = new_id("in")
        values[vid] = {"dtype": dtype or rng.choice(DTYPES),
                       "shape": list(shape if shape is not None else rng.choice(SHAPES))}
        inputs.append(vid)
        return vid

    def operand() -> str:
        # Reuse an earlier result or input sometimes: results feed later collectives.
        pool = produced + inputs
        if pool and rng.random() < 0.35:
            return rng.choice(pool)
        return fresh_input()

    def outputs_like(args: list[str]) -> list[str]:
        outs = []
        for a in args:
            vid = new_id("v")
            values[vid] = dict(values[a])
            outs.append(vid)
        return outs

    n_stmts = rng.randint(1, max_stmts)
    while len(stmts) < n_stmts:
        r = rng.random()
        if open_handles and r < 0.30:
            h = open_handles.pop(rng.randrange(len(open_handles)))
            outs = outputs_like(handle_specs[h])
            stmts.append({"k": "wait", "h": h, "out": outs, "info": rng.random() < 0.5})
            produced.extend(outs)
        elif r < 0.55:
            args = [operand() for _ in range(rng.choice((1, 1, 2, 3, 4)))]
            h = new_id("h")
            handle_specs[h] = args
            open_handles.append(h)
            stmts.append({"k": "start", "op": rng.choice(OPS), "args": args,
                          "tree": rng.choice(("tuple", "dict", "single")) if len(args) == 1
                          else rng.choice(("tuple", "dict")), "h": h})
        elif r < 0.78:
            args = [operand() for _ in range(rng.choice((1, 1, 2, 3, 3, 4)))]
            outs = outputs_like(args)
            stmts.append({"k": "ar", "op": rng.choice(OPS), "args": args, "out": outs,
                          "tree": rng.choice(("tuple", "dict", "single")) if len(args) == 1
                          else rng.choice(("tuple", "dict")), "info": rng.random() < 0.5})
            produced.extend(outs)
        elif r < 0.88 and (produced or inputs):
            b = rng.choice(produced or inputs)
            a = fresh_input()
            out = new_id("v")
            values[out] = dict(values[a])
            stmts.append({"k": "mix", "a": a, "b": b, "out": out})
            produced.append(out)
        elif r < 0.94:
            arg = operand()
            length = rng.randint(1, 3)
            out = new_id("v")
            values[out] = {"dtype": values[arg]["dtype"], "shape": [length] + values[arg]["shape"]}
            stmts.append({"k": "scan", "op": rng.choice(OPS), "arg": arg, "len": length,
                          "sw": rng.random() < 0.5, "out": out})
            produced.append(out)
        else:
            arg = operand()
            out = new_id("v")
            values[out] = dict(values[arg])
            stmts.append({"k": "cond", "ops": [rng.choice(OPS), rng.choice(OPS)], "arg": arg,
                          "pred": rng.random() < 0.5, "sw": rng.random() < 0.5, "out": out})
            produced.append(out)

    if kinds:
        insert_kinds(random.Random(f"pccl-program-kinds:{seed}:{index}"), stmts, fresh_input,
                     new_id, values)

    # Open handles: wait inside (random order), or hand them to a second jitted call.
    rng.shuffle(open_handles)
    pending = []
    if open_handles and rng.random() < 0.4:
        pending = open_handles
    else:
        for h in open_handles:
            outs = outputs_like(handle_specs[h])
            stmts.append({"k": "wait", "h": h, "out": outs, "info": rng.random() < 0.5})
    pending_outs = {}
    for h in pending:
        pending_outs[h] = outputs_like(handle_specs[h])
    return {
        "seed": seed, "index": index, "values": values, "inputs": inputs, "stmts": stmts,
        "pending": pending, "pending_outs": pending_outs,
        "eager": rng.random() < 0.12,
        # with pending handles: call update_topology() / sync_shared_state() in
        # between, which must raise PcclError (never deadlock, never succeed)
        "guard": (rng.choice(("update_topology", "sync_shared_state", None)) if pending else None),
    }


def describe(prog: dict) -> str:
    """One line per statement, for reports."""
    v = prog["values"]

    def s(vid):
        spec = v[vid]
        return f"{vid}:{spec['dtype']}{tuple(spec['shape'])}"

    lines = []
    for st in prog["stmts"]:
        k = st["k"]
        if k in ("ar", "start"):
            lhs = st["h"] if k == "start" else ",".join(st["out"])
            lines.append(f"{lhs} = {k}({st['op']}, {st['tree']}: {', '.join(s(a) for a in st['args'])})")
        elif k == "wait":
            lines.append(f"{','.join(st['out'])} = wait({st['h']})")
        elif k == "mix":
            lines.append(f"{st['out']} = clip({s(st['a'])} + {st['b']}[0])")
        elif k == "scan":
            lines.append(f"{st['out']} = scan[{st['len']}]({'start/wait' if st['sw'] else 'all_reduce'} "
                         f"{st['op']}, {s(st['arg'])})")
        elif k in KINDS:
            what = {"gather": "sum(all_gather(x))", "rs": f"reduce_scatter({st['op']})[0]",
                    "bcast": f"broadcast(all_reduce({st['op']}))"}[k]
            lines.append(f"{st['out']} = {what} of {s(st['arg'])}")
        else:
            lines.append(f"{st['out']} = cond({st['pred']}, {st['ops'][0]} | {st['ops'][1]}, "
                         f"{'start/wait' if st['sw'] else 'all_reduce'} {s(st['arg'])})")
    if prog["pending"]:
        lines.append(f"return handles {prog['pending']}; "
                     f"{('guard: ' + prog['guard'] + '(); ') if prog['guard'] else ''}"
                     f"second jit waits them in this order")
    return "; ".join(lines) + (" [eager]" if prog["eager"] else " [jit]")


KINDS = ("gather", "rs", "bcast")


def insert_kinds(krng: random.Random, stmts: list, fresh_input, new_id, values) -> None:
    """1-3 statements of the other kinds at random places, each on a fresh input."""
    for _ in range(krng.randint(1, 3)):
        arg = fresh_input(krng.choice(DTYPES), krng.choice(SHAPES))
        out = new_id("v")
        values[out] = dict(values[arg])
        stmts.insert(krng.randint(0, len(stmts)),
                     {"k": krng.choice(KINDS), "op": krng.choice(OPS), "arg": arg, "out": out})


def output_ids(prog: dict) -> list[str]:
    """Ids of the values a run returns, in order (what the reference computes)."""
    out = []
    for st in prog["stmts"]:
        if st["k"] in ("ar", "wait"):
            out.extend(st["out"])
        elif st["k"] in ("scan", "cond") + KINDS:
            out.append(st["out"])
    for h in prog["pending"]:
        out.extend(prog["pending_outs"][h])
    return out


def predicates(prog: dict) -> np.ndarray:
    """The lax.cond predicates, one per cond statement (passed at run time)."""
    return np.array([st["pred"] for st in prog["stmts"] if st["k"] == "cond"] + [False], np.bool_)


def n_infos(prog: dict) -> int:
    return sum(1 for st in prog["stmts"] if st["k"] in ("ar", "wait") and st["info"]) + len(prog["pending"])


# --- inputs ----------------------------------------------------------------------

def make_inputs(prog: dict, peer: int, step: int) -> list[np.ndarray]:
    """This peer's inputs for one step: small integers in the clip range."""
    out = []
    for k, vid in enumerate(prog["inputs"]):
        spec = prog["values"][vid]
        digest = hashlib.sha256(f"{prog['seed']}:{prog['index']}:{peer}:{step}:{k}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        lo = lo_of(spec["dtype"])
        arr = rng.integers(lo, HI, endpoint=True, size=tuple(spec["shape"]))
        out.append(np.asarray(arr).astype(np_dtype(spec["dtype"])))
    return out


# --- numpy reference ---------------------------------------------------------------

def _clip_np(x: np.ndarray, dtype: str) -> np.ndarray:
    # -0.0 becomes +0.0 (as in `build`): XLA may fold `x + 0` to `x`, numpy does
    # not, and prod's sign of zero would then differ for a reason not the library's
    # Rounded too: an `avg` result (1/3, ...) fed into a later collective would
    # otherwise be reduced with roundings whose order (the ring's) the
    # reference cannot know; integers keep every op exact in any order.
    y = np.round(np.clip(x.astype(np.float64), lo_of(dtype), HI))
    return np.where(y == 0, 0.0, y).astype(np_dtype(dtype))


def _reduce_np(arrs: list[np.ndarray], op: str, dtype: str) -> np.ndarray:
    stack = np.stack([a.astype(np.float64) for a in arrs])  # small integers: exact
    n = len(arrs)
    if op == "sum":
        r = stack.sum(0)
    elif op == "prod":
        r = stack.prod(0)
    elif op == "min":
        r = stack.min(0)
    elif op == "max":
        r = stack.max(0)
    else:  # avg
        s = stack.sum(0)
        if dtype == "float64":
            r = s / np.float64(n)
        elif dtype in FLOATS:
            r = (s.astype(np.float32) / np.float32(n)).astype(np.float32)
        else:
            r = np.trunc(s / n)
    if dtype in FLOATS and dtype != "float64" and op == "avg":
        return np.asarray(r, np.float32).astype(np_dtype(dtype))
    return np.asarray(r).astype(np_dtype(dtype))


def reference(prog: dict, inputs_by_peer: dict[int, list[np.ndarray]]) -> list[np.ndarray]:
    """The exact outputs (same on every participant) of one step, given the
    inputs of every peer that took part (keys: participating peers)."""
    peers = sorted(inputs_by_peer)
    env = {p: dict(zip(prog["inputs"], inputs_by_peer[p])) for p in peers}
    spec = prog["values"]
    handles: dict[str, list[list[np.ndarray]]] = {}

    def collective(args, op):
        outs = []
        for a in args:
            dt = spec[a]["dtype"]
            outs.append(_reduce_np([_clip_np(env[p][a], dt) for p in peers], op, dt))
        return outs

    for st in prog["stmts"]:
        k = st["k"]
        if k == "ar":
            res = collective(st["args"], st["op"])
            for p in peers:
                env[p].update(zip(st["out"], res))
        elif k == "start":
            handles[st["h"]] = collective(st["args"], st["op"])
        elif k == "wait":
            res = handles.pop(st["h"])
            for p in peers:
                env[p].update(zip(st["out"], res))
        elif k == "mix":
            da, db = spec[st["a"]]["dtype"], spec[st["b"]]["dtype"]
            lo = max(lo_of(da), lo_of(db))
            for p in peers:
                b0 = float(np.asarray(env[p][st["b"]], np.float64).reshape(-1)[0])
                b0 = float(np.round(min(max(b0, lo), HI)))  # as `build` does
                a = env[p][st["a"]].astype(np.float64)
                env[p][st["out"]] = _clip_np(a + b0, da)
        elif k == "scan":
            dt = spec[st["arg"]]["dtype"]
            rows = []
            for t in range(st["len"]):
                xs = [_clip_np((_clip_np(env[p][st["arg"]], dt).astype(np.float64) + t), dt)
                      for p in peers]
                rows.append(_reduce_np(xs, st["op"], dt))
            res = np.stack(rows)
            for p in peers:
                env[p][st["out"]] = res
        elif k == "cond":
            op = st["ops"][0] if st["pred"] else st["ops"][1]
            res = collective([st["arg"]], op)[0]
            for p in peers:
                env[p][st["out"]] = res
        elif k in KINDS:
            res = collective([st["arg"]], "sum" if k == "gather" else st["op"])[0]
            for p in peers:
                env[p][st["out"]] = res
    for h in prog["pending"]:
        res = handles.pop(h)
        for p in peers:
            env[p].update(zip(prog["pending_outs"][h], res))
    p0 = peers[0]
    return [np.asarray(env[p0][vid]) for vid in output_ids(prog)]


# --- jax builder -----------------------------------------------------------------------

def build(prog: dict, comm, pccl):
    """(main, finish): main(preds, *inputs) -> (outputs, infos, pending handles);
    preds: `predicates(prog)` (run-time values, so lax.cond is not folded away);
    finish(handles) -> (outputs, infos). jitted unless the program is eager."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    spec = prog["values"]

    def jdt(name):
        return jnp.bfloat16 if name == "bfloat16" else jnp.dtype(name)

    def clip(x, dtype):
        y = jnp.clip(x, lo_of(dtype), HI)
        if dtype in FLOATS:  # integer-valued, as in _clip_np (round half to even in both)
            y = jnp.round(y)
        y = y.astype(jdt(dtype))
        if dtype in FLOATS:  # no -0.0 in any operand (see _clip_np)
            y = jnp.where(y == 0, jnp.zeros_like(y), y)
        return y

    def tree_of(st, leaves):
        if st["tree"] == "single":
            return leaves[0]
        if st["tree"] == "dict":
            return {f"k{i:02d}": v for i, v in enumerate(leaves)}
        return tuple(leaves)

    def leaves_of(st, tree):
        if st["tree"] == "single":
            return [tree]
        if st["tree"] == "dict":
            return [tree[f"k{i:02d}"] for i in range(len(st["args"]))]
        return list(tree)

    def main(world, preds, *xs):
        env = dict(zip(prog["inputs"], xs))
        n_cond = 0
        handles, starts = {}, {}
        outs, infos = [], []
        for st in prog["stmts"]:
            k = st["k"]
            if k == "ar":
                tree = tree_of(st, [clip(env[a], spec[a]["dtype"]) for a in st["args"]])
                if st["info"]:
                    res, info = pccl.all_reduce(tree, comm, op=st["op"], return_info=True)
                    infos.append(info.world_size)
                else:
                    res = pccl.all_reduce(tree, comm, op=st["op"])
                res = leaves_of(st, res)
                env.update(zip(st["out"], res))
                outs.extend(res)
            elif k == "start":
                tree = tree_of(st, [clip(env[a], spec[a]["dtype"]) for a in st["args"]])
                handles[st["h"]] = pccl.all_reduce_start(tree, comm, op=st["op"])
                starts[st["h"]] = st
            elif k == "wait":
                h = handles.pop(st["h"])
                if st["info"]:
                    res, info = pccl.all_reduce_wait(h, return_info=True)
                    infos.append(info.world_size)
                else:
                    res = pccl.all_reduce_wait(h)
                res = leaves_of(starts[st["h"]], res)
                env.update(zip(st["out"], res))
                outs.extend(res)
            elif k == "mix":
                da, db = spec[st["a"]]["dtype"], spec[st["b"]]["dtype"]
                lo = max(lo_of(da), lo_of(db))
                # b0 rounded before the cast, as in the reference: a cast to an
                # integer dtype truncates an avg's 1.5 to 1, numpy's round gives 2
                b0 = jnp.round(jnp.clip(env[st["b"]].reshape(-1)[0], lo, HI)).astype(jdt(da))
                env[st["out"]] = clip(env[st["a"]] + b0, da)
            elif k == "scan":
                dt = spec[st["arg"]]["dtype"]
                base = clip(env[st["arg"]], dt)
                ts = jnp.arange(st["len"], dtype=jnp.int32)
                op, sw = st["op"], st["sw"]

                def body(carry, t, base=base, dt=dt, op=op, sw=sw):
                    x = clip(base.astype(jnp.float32) + t.astype(jnp.float32), dt)
                    if sw:
                        y = pccl.all_reduce_wait(pccl.all_reduce_start(x, comm, op=op))
                    else:
                        y = pccl.all_reduce(x, comm, op=op)
                    return carry, y

                _, ys = lax.scan(body, jnp.int32(0), ts)
                env[st["out"]] = ys
                outs.append(ys)
            elif k == "cond":
                dt = spec[st["arg"]]["dtype"]
                x = clip(env[st["arg"]], dt)

                def branch(op, sw=st["sw"]):
                    if sw:
                        return lambda v: pccl.all_reduce_wait(pccl.all_reduce_start(v, comm, op=op))
                    return lambda v: pccl.all_reduce(v, comm, op=op)

                y = lax.cond(preds[n_cond], branch(st["ops"][0]), branch(st["ops"][1]), x)
                n_cond += 1
                env[st["out"]] = y
                outs.append(y)
            elif k in KINDS:
                dt = spec[st["arg"]]["dtype"]
                x = clip(env[st["arg"]], dt)
                if k == "gather":
                    y = jnp.sum(pccl.all_gather(x, comm, world_size=world), axis=0).astype(jdt(dt))
                elif k == "rs":
                    stacked = jnp.broadcast_to(x[None], (world, *x.shape))
                    y = pccl.reduce_scatter(stacked, comm, op=st["op"], world_size=world)[0]
                else:
                    y = pccl.broadcast(pccl.all_reduce(x, comm, op=st["op"]), comm, root=0)
                env[st["out"]] = y
                outs.append(y)
        pend = [handles.pop(h) for h in prog["pending"]]
        assert not handles, "generator left a handle neither waited nor returned"
        return outs, infos, pend

    def finish(pend):
        outs, infos = [], []
        for h, hd in zip(prog["pending"], pend):
            st = next(s for s in prog["stmts"] if s.get("h") == h and s["k"] == "start")
            res, info = pccl.all_reduce_wait(hd, return_info=True)
            outs.extend(leaves_of(st, res))
            infos.append(info.world_size)
        return outs, infos

    # Traced once per group size (all_gather's and reduce_scatter's shapes
    # depend on it), read when the step runs.
    traced = {}

    def run_main(preds, *xs):
        world = comm.group_world_size
        if prog["eager"]:
            return main(world, preds, *xs)
        if world not in traced:
            traced[world] = jax.jit(main, static_argnums=0)
        return traced[world](world, preds, *xs)

    if prog["eager"]:
        return run_main, finish
    return run_main, jax.jit(finish)
