"""funcgrad.scipy: SciPy-style functions built from funcgrad.lax (as jax.scipy)."""

from . import special  # noqa: F401
