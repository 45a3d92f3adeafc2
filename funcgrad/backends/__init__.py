"""Backends: the code generators and interpreters that run programs on NumPy (and CuPy)."""
