"""Training: optimizer, jit steps, device mesh, Orbax checkpoints, lock file, the loop."""
