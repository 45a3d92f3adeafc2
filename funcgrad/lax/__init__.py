"""funcgrad.lax: the primitives, each defined once with all of its rules, and thin wrappers."""

from .elementwise import *  # noqa: F403
from .elementwise import abs, max, min, pow, round  # noqa: A004 (lax names shadow builtins)
from .structural import *  # noqa: F403
from .structural import slice  # noqa: A004
from .parallel import all_gather, axis_index, axis_size, pmax, pmean, pmin, psum, psum_scatter
from .indexing import *  # noqa: F403
from . import linalg  # noqa: E402
from .control_flow import (  # noqa: E402
    cond, cond_p, fori_loop, remat_p, scan, scan_p, switch, while_loop, while_p,
)
from .control_flow import map  # noqa: E402, A004 (lax's name)
from .conv import conv_general_dilated  # noqa: E402
from ._more import *  # noqa: E402, F403  (more of jax.lax, composed from the primitives above)
