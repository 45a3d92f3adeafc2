"""funcgrad: models as pure functions, traced to programs and transformed (grad, jvp, vmap, jit).

    import funcgrad as fg, funcgrad.numpy as fnp
    fg.grad(lambda w, x: fnp.sum(fnp.tanh(x @ w)))(w, x)
"""

from . import (
    config,
    core,
    lax,
    nn,  # noqa: E402
    numpy,  # noqa: F401  (installs the array methods of tracers)
    tree_util,
)
from .core import ConcretizationError, LeakedTracerError, ShapedArray, make_jaxpr
from .core.avals import float0
from .lax.custom_derivatives import custom_jvp, custom_vjp
from .transforms.grad import grad, jacrev, stop_gradient, value_and_grad, vjp
from .transforms.jit import jit
from .transforms.jvp import hessian, jacfwd, jvp, linearize
from .transforms.vmap import vmap

__version__ = "0.1.0"
from . import masks, optim  # noqa: E402  (training layer: uses only the API above)
from .transforms.checkpoint import checkpoint, print_saved_residuals, remat  # noqa: E402

# isort: split
from . import losses, models, random  # noqa: E402  (fg.random, fg.models, fg.losses)

# isort: split
from . import io, lora  # noqa: E402  (checkpoints and LoRA adapters: fg.io, fg.lora)

# isort: split
from . import mixed_precision, quant  # noqa: E402  (fg.mixed_precision.Policy, fg.quant)

# isort: split
from . import distributed  # noqa: E402  (data-parallel training over MPI/NCCL: fg.distributed)

# isort: split
from . import (
    debug,  # noqa: E402  (fg.debug.print / fg.debug.callback)
    scipy,  # noqa: E402  (fg.scipy.special, as jax.scipy.special)
)
from .devices import default_backend, device_put, devices  # noqa: E402

# isort: split
from . import (
    flatten_util,  # noqa: E402  (fg.flatten_util.ravel_pytree, as jax.flatten_util)
    tree,  # noqa: E402  (fg.tree.map, fg.tree.leaves, ... as jax.tree)
    typing,  # noqa: E402  (fg.typing.ArrayLike; fg.Array below)
)
from .core import ShapedArray as ShapeDtypeStruct  # noqa: E402  (JAX's name for an abstract array)
from .transforms.checkpoint import checkpoint_name, checkpoint_policies  # noqa: E402
from .transforms.jit import disable_jit, eval_shape  # noqa: E402
from .transforms.jit_cache import clear_caches  # noqa: E402
from .typing import Array  # noqa: E402

jacobian = jacrev  # JAX's alias


def device_get(x):
    """The arrays of pytree `x` as NumPy arrays on the host (as jax.device_get)."""
    return device_put(x, "cpu")


def block_until_ready(x):
    """Wait until the arrays of `x` are computed and return `x` (GPU work is asynchronous;
    NumPy's is not)."""
    for leaf in tree_util.tree_leaves(x):
        sync = getattr(getattr(leaf, "device", None), "synchronize", None)
        if sync is not None:
            sync()
    return x
