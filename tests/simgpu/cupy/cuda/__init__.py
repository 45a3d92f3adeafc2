"""cupy.cuda, simulated: one device (id 0), the null stream, and the runtime/driver/compiler
submodules funcgrad touches. There is no `cupy.cuda.nccl`: importing it fails, as on a CuPy
built without NCCL, so code takes its fallback path."""

from __future__ import annotations

from . import compiler, driver, runtime  # noqa: F401


def is_available():
    return True


def get_device_id():
    return 0


class Device:
    """A CUDA device; only device 0 exists. A context manager, as in CuPy."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(getattr(device, "id", device))
        if not 0 <= self.id < runtime.getDeviceCount():
            raise runtime.CUDARuntimeError(
                f"cudaErrorInvalidDevice: invalid device ordinal ({self.id})")

    compute_capability = "80"

    def use(self):
        pass

    def synchronize(self):
        pass

    @property
    def mem_info(self):
        return (70 << 30, 80 << 30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(("cuda", self.id))

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Stream:
    """A CUDA stream. Work runs synchronously in the simulator, so synchronize() is a no-op.
    `Stream.null` (ptr 0) is the default."""

    _next_ptr = 1
    _current = []

    def __init__(self, null=False, non_blocking=False, ptr=None):
        if null:
            self.ptr = 0
        else:
            self.ptr = Stream._next_ptr if ptr is None else ptr
            Stream._next_ptr += 1

    def synchronize(self):
        pass

    def use(self):
        Stream._current[:] = [self]
        return self

    def __enter__(self):
        Stream._current.append(self)
        return self

    def __exit__(self, *exc):
        Stream._current.pop()
        return False

    def __repr__(self):
        return f"<Stream {self.ptr}>"


Stream.null = Stream(null=True)


def get_current_stream(device_id=None):
    return Stream._current[-1] if Stream._current else Stream.null
