"""cupy.cuda.runtime, simulated: one device."""

is_hip = False


class CUDARuntimeError(RuntimeError):
    """An error of the CUDA runtime API."""


def getDeviceCount():
    return 1


def getDevice():
    return 0


def setDevice(device):
    if device != 0:
        raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")


def deviceSynchronize():
    pass


def runtimeGetVersion():
    return 12040


def driverGetVersion():
    return 12040


def getDeviceProperties(device):
    setDevice(device)
    return {"name": b"funcgrad simgpu (CPU)", "totalGlobalMem": 80 << 30, "major": 8,
            "minor": 0, "multiProcessorCount": 1, "maxThreadsPerBlock": 1024,
            "warpSize": 32, "sharedMemPerBlock": 48 << 10}
