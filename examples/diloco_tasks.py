"""The two training tasks of examples/diloco_train.py, in plain JAX.

- digits: a 64-100-100-10 MLP on scikit-learn's bundled 8x8 digits
  (load_digits: 1797 images, 360 held out for evaluation).
- chars: a 2-layer character-level transformer on the text of this Python's
  own standard library sources (found at run time with sysconfig); files whose
  name hashes to 0 mod 10 are held out for evaluation.

Each peer trains on its own shard (example i of the training set goes to peer
i % world) with its own sampling seed; evaluation uses the same fixed batch
everywhere.
"""
from __future__ import annotations

import glob
import os
import sysconfig
import zlib
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Task(NamedTuple):
    name: str
    init: Callable  # key -> params
    loss: Callable  # (params, batch) -> scalar
    evaluate: Callable  # (params, batch) -> (loss, accuracy)
    sampler: Callable  # (index, world, seed) -> () -> batch
    eval_batch: tuple


def _cross_entropy(logits, labels):
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[..., None], axis=-1).mean()


def _accuracy(logits, labels):
    return (jnp.argmax(logits, -1) == labels).mean()


# --- digits: an MLP ------------------------------------------------------------

def digits() -> Task:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    x_eval, y_eval, x_train, y_train = x[:360], y[:360], x[360:], y[360:]
    sizes = (64, 100, 100, 10)  # 17,610 parameters: 5 equal fragments

    def augment(images, rng):
        # shift each 8x8 image by up to one pixel each way (zero fill): 1437
        # training images would otherwise be memorised within a few hundred steps
        out = np.zeros_like(images).reshape(-1, 8, 8)
        src = images.reshape(-1, 8, 8)
        for k, (dy, dx) in enumerate(rng.integers(-1, 2, (len(images), 2))):
            out[k, max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)] = \
                src[k, max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):8 + min(-dx, 0)]
        return out.reshape(len(images), 64)

    def init(key):
        params = {}
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            key, sub = jax.random.split(key)
            params[f"w{i}"] = jax.random.normal(sub, (n_in, n_out), jnp.float32) * np.sqrt(2.0 / n_in)
            params[f"b{i}"] = jnp.zeros((n_out,), jnp.float32)
        return params

    def logits(params, xb):
        h = xb
        for i in range(len(sizes) - 1):
            h = h @ params[f"w{i}"] + params[f"b{i}"]
            if i < len(sizes) - 2:
                h = jax.nn.relu(h)
        return h

    def loss(params, batch):
        return _cross_entropy(logits(params, batch[0]), batch[1])

    def evaluate(params, batch):
        out = logits(params, batch[0])
        return _cross_entropy(out, batch[1]), _accuracy(out, batch[1])

    def sampler(index, world, seed, batch_size=32, iid=False):
        # shard i (default) or, with iid, the whole training set
        xs, ys = (x_train, y_train) if iid else (x_train[index::world], y_train[index::world])
        rng = np.random.default_rng(seed)

        def next_batch():
            pick = rng.integers(0, len(xs), batch_size)
            return augment(xs[pick], rng), ys[pick]
        return next_batch

    return Task("digits", init, loss, evaluate, sampler, (x_eval, y_eval))


# --- chars: a small transformer ------------------------------------------------

VOCAB = 128  # ASCII; other bytes become '?'
CONTEXT = 64


def stdlib_text(max_bytes: int = 3 << 20) -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) uint8 token arrays from the standard library's .py files."""
    root = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(root, "*.py")))
    if not files:
        raise RuntimeError(f"no Python sources found under {root}")
    train, held_out, size = [], [], 0
    for path in files:
        with open(path, "rb") as f:
            data = np.frombuffer(f.read(), np.uint8)
        data = np.where(data < VOCAB, data, ord("?")).astype(np.uint8)
        (held_out if zlib.crc32(os.path.basename(path).encode()) % 10 == 0 else train).append(data)
        size += data.size
        if size >= max_bytes:
            break
    return np.concatenate(train), np.concatenate(held_out)


def chars(d_model: int = 64, layers: int = 2, heads: int = 4) -> Task:
    train, held_out = stdlib_text()
    rng = np.random.default_rng(1)
    starts = rng.integers(0, held_out.size - CONTEXT - 1, 128)
    eval_tokens = np.stack([held_out[s:s + CONTEXT + 1] for s in starts]).astype(np.int32)

    def init(key):
        keys = iter(jax.random.split(key, 4 + 6 * layers))
        normal = lambda shape, scale=0.02: jax.random.normal(next(keys), shape, jnp.float32) * scale  # noqa: E731
        params = {"embed": normal((VOCAB, d_model)), "pos": normal((CONTEXT, d_model)),
                  "unembed": normal((d_model, VOCAB)), "ln_f": jnp.ones((d_model,))}
        for i in range(layers):
            params[f"l{i}"] = {
                "ln1": jnp.ones((d_model,)), "ln2": jnp.ones((d_model,)),
                "qkv": normal((d_model, 3 * d_model)), "proj": normal((d_model, d_model)),
                "up": normal((d_model, 4 * d_model)), "down": normal((4 * d_model, d_model)),
            }
        return params

    def norm(x, gain):
        x = x - x.mean(-1, keepdims=True)
        return gain * x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-5)

    def logits(params, tokens):
        b, t = tokens.shape
        h = params["embed"][tokens] + params["pos"][:t]
        mask = jnp.tril(jnp.ones((t, t), bool))
        for i in range(layers):
            p = params[f"l{i}"]
            q, k, v = jnp.split(norm(h, p["ln1"]) @ p["qkv"], 3, axis=-1)
            q, k, v = (a.reshape(b, t, heads, -1).transpose(0, 2, 1, 3) for a in (q, k, v))
            att = jnp.where(mask, q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]), -1e9)
            out = (jax.nn.softmax(att, -1) @ v).transpose(0, 2, 1, 3).reshape(b, t, d_model)
            h = h + out @ p["proj"]
            h = h + jax.nn.gelu(norm(h, p["ln2"]) @ p["up"]) @ p["down"]
        return norm(h, params["ln_f"]) @ params["unembed"]

    def loss(params, batch):
        return _cross_entropy(logits(params, batch[:, :-1]), batch[:, 1:])

    def evaluate(params, batch):
        out = logits(params, batch[:, :-1])
        return _cross_entropy(out, batch[:, 1:]), _accuracy(out, batch[:, 1:])

    def sampler(index, world, seed, batch_size=16, iid=False):
        # peer i reads the i-th of `world` contiguous slices of the training
        # text (default) or, with iid, all of it
        lo = index * (train.size // world)
        shard = train if iid else train[lo:lo + train.size // world]
        rng = np.random.default_rng(seed)

        def next_batch():
            s = rng.integers(0, shard.size - CONTEXT - 1, batch_size)
            return np.stack([shard[j:j + CONTEXT + 1] for j in s]).astype(np.int32)
        return next_batch

    return Task("chars", init, loss, evaluate, sampler, eval_tokens)


TASKS = {"digits": digits, "chars": chars}
