"""Transforms: functions in, functions out (grad, jvp, vmap, jit, checkpoint)."""
