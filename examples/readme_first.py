import jax.numpy as jnp, numpy as np, optax
import jax_pccl as pccl

def loss_fn(params, batch):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

comm = pccl.Communicator.from_env().connect()          # JAX_PCCL_MASTER=host:port
trainer = pccl.DataParallel(comm, loss_fn, optax.adam(0.1), min_peers=2)
trainer.init({"w": jnp.zeros(8), "b": jnp.zeros(())})  # a joiner gets the run's state
rng = np.random.default_rng()                          # each peer its own data
while trainer.step_count < 300:                        # the run's step count
    x = rng.normal(size=(32, 8)).astype(np.float32)
    loss = trainer.step((x, x @ np.arange(8.0, dtype=np.float32)))
print(f"step {trainer.step_count}: loss {loss:.4f}, state {trainer.digest()[:16]}")
