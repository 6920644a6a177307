import jax.numpy as jnp, numpy as np, optax
import jax_pccl as pccl

def loss_fn(params, batch):                      # any JAX loss: (params, batch) -> scalar
    x, y = batch
    return jnp.mean((x @ params["w"] - y) ** 2)

comm = pccl.Communicator.from_env().connect()   # master from $JAX_PCCL_MASTER
trainer = pccl.DataParallel(comm, loss_fn, optax.sgd(0.1))
trainer.init({"w": jnp.zeros(8)})               # a joiner receives the run's state here
rng = np.random.default_rng()                   # each peer its own data
while trainer.step_count < 200:
    x = rng.normal(size=(64, 8)).astype(np.float32)
    loss = trainer.step((x, x @ np.arange(8.0, dtype=np.float32)))
print(f"step {trainer.step_count} peers {trainer.world_size} loss {float(loss):.4f} {trainer.digest()}")
