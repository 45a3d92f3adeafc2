"""funcgrad.lax: the primitives, each defined once with all of its rules, and thin wrappers."""

from .elementwise import *  # noqa: F403
from .elementwise import abs, max, min, pow, round  # noqa: A004 (lax names shadow builtins)
from .structural import *  # noqa: F403
from .structural import slice  # noqa: A004
from .parallel import all_gather, axis_index, pmax, pmean, pmin, psum
from .indexing import *  # noqa: F403
from . import linalg  # noqa: E402
