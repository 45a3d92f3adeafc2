"""funcgrad.lax: the primitives, each defined once with all of its rules, and thin wrappers."""

from .elementwise import *  # noqa: F403
from .elementwise import abs, complex, max, min, pow, round  # noqa: A004 (lax names shadow builtins)
from .structural import *  # noqa: F403
from .structural import slice  # noqa: A004
from .reductions import *  # noqa: F403
from .products import *  # noqa: F403
from .parallel import all_gather, axis_index, axis_size, pmax, pmean, pmin, psum, psum_scatter
from .indexing import *  # noqa: F403
from .dynamic_slicing import *  # noqa: F403
from .cumulative import *  # noqa: F403
from . import linalg  # noqa: E402
from .fft import FftType, fft, fft_p  # noqa: E402
from .conditionals import cond, cond_p, switch  # noqa: E402
from .while_loops import fori_loop, while_loop, while_p  # noqa: E402
from .scans import associative_scan, scan, scan_p  # noqa: E402
from .scans import map  # noqa: E402, A004 (lax's name)
from .remat import remat_p  # noqa: E402
from .conv import conv_general_dilated, conv_transpose, padtype_to_pads  # noqa: E402
from .slicing import *  # noqa: E402, F403
from .elementwise_composite import *  # noqa: E402, F403
from .bitwise import *  # noqa: E402, F403
from .sorting import *  # noqa: E402, F403
from .windowed_reductions import *  # noqa: E402, F403
from . import quantized  # noqa: E402  (funcgrad.quant's primitives)
from .quantized import quantized_dequantize, quantized_matmul, quantized_take  # noqa: E402
