"""Pure jax.numpy math: no parameters, no Flax, no configs."""
