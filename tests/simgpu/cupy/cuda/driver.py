"""cupy.cuda.driver, simulated: the error a failed kernel launch raises."""


class CUDADriverError(RuntimeError):
    """An error of the CUDA driver API (e.g. an invalid launch configuration)."""
