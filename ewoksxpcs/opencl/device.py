"""OpenCL devices and kernel programs, through silx's OpenCL helpers.

A device is named by a *spec*:

- ``None`` (or ``"auto"``): the best GPU if there is one, else the best CPU device, else any;
- ``"gpu"``, ``"cpu"``, ``"accelerator"`` (or ``"acc"``): the best device of that kind;
- ``"P:D"``: device ``D`` of platform ``P`` (indices as listed by :func:`list_devices`).

:func:`get_device` returns an :class:`OpenCLDevice` (context, in-order queue and the device's
limits), cached per spec, so every correlator on a device shares one context and the programs
compiled in it. :func:`build_program` compiles an OpenCL C file of ``ewoksxpcs.kernels``, with
``kernels/common.cl`` (64-bit atomic helpers) prepended, once per (device, file, defines).
:func:`device_buffer` and :func:`zero_buffer` allocate and zero device buffers of any size
(NVIDIA's ``clEnqueueFillBuffer`` hangs on fills of 2^31 bytes or more: a kernel does those).
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import warnings
from concurrent.futures import Future
from importlib import resources

import numpy

# Compiler logs of a successful build are noise to users; errors are still raised in full.
os.environ.setdefault("PYOPENCL_COMPILER_OUTPUT", "0")

__all__ = [
    "Checkpoints",
    "OpenCLDevice",
    "OpenCLUnavailableError",
    "FILL_MAX_BYTES",
    "build_in_background",
    "build_program",
    "copy_into",
    "device_buffer",
    "download_pinned",
    "get_device",
    "get_kernel",
    "list_devices",
    "pinned_empty",
    "upload_pinned",
    "upload_small",
    "zero_buffer",
]

logger = logging.getLogger(__name__)

_KINDS = {"gpu": "GPU", "cpu": "CPU", "accelerator": "ACC", "acc": "ACC"}


class Checkpoints:
    """Progress of the work queued on an in-order OpenCL queue, reported as it completes.

    Kernels run asynchronously: on a CPU device most of them run after the host has queued
    them all (after the last frame is read). A marker after each batch of kernels
    (:meth:`mark`), waited on in turn (:meth:`wait`), tells how much of that work is done.

    Parameters
    ----------
    queue : pyopencl.CommandQueue
        In-order queue of the kernels.
    report : callable, optional
        ``report(fraction)``, fraction in [0, 1]; None: nothing is marked nor waited on.
    steps : int
        At most this many reports (markers in between are not waited on).
    """

    def __init__(self, queue, report=None, steps: int = 20):
        self.queue, self.report, self.steps = queue, report, int(steps)
        self.markers: list = []

    def mark(self) -> None:
        """Mark the end of the work queued so far."""
        if self.report is not None:
            import pyopencl

            self.markers.append(pyopencl.enqueue_marker(self.queue))

    def wait(self, lo: float = 0.0, hi: float = 1.0) -> None:
        """Wait for the marked work, reporting ``lo`` to ``hi`` as the markers complete."""
        n = len(self.markers)
        if self.report is None or not n:
            return
        self.queue.flush()
        picks = sorted({max(0, -(-(k * n) // self.steps) - 1) for k in range(1, self.steps + 1)})
        for i in picks:
            self.markers[i].wait()
            self.report(lo + (hi - lo) * (i + 1) / n)
        self.markers = []


class OpenCLUnavailableError(RuntimeError):
    """No OpenCL platform, or no device matching the spec asked for."""


def _ocl():
    """silx's OpenCL inventory (``silx.opencl.common.ocl``), or raise OpenCLUnavailableError."""
    from .pocl_cpu import prepare_pocl

    prepare_pocl()  # before the first platform query: PoCL on CPUs newer than its LLVM
    from .icd import start_driver

    start_driver()  # the drivers start without the GIL (silx's inventory would hold it)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from silx.opencl.common import ocl
    except ImportError as e:  # pyopencl missing or its ICD loader broken
        raise OpenCLUnavailableError(
            f"OpenCL is not usable ({e}); install pyopencl and an OpenCL platform "
            "(e.g. the 'pocl' extra: pip install ewoksxpcs[pocl])"
        ) from None
    if ocl is None or not ocl.platforms:
        raise OpenCLUnavailableError(
            "no OpenCL platform found; install the 'pocl' extra: pip install ewoksxpcs[pocl]"
        )
    return ocl


def _available() -> str:
    ocl = _ocl()
    return "; ".join(
        f"{p}:{d} {dev.type} '{plat.name}: {dev.name}'"
        for p, plat in enumerate(ocl.platforms)
        for d, dev in enumerate(plat.devices)
    )


class OpenCLDevice:
    """One OpenCL device with its context and in-order command queue.

    Attributes
    ----------
    context : pyopencl.Context
    queue : pyopencl.CommandQueue
        In-order queue; every ewoksxpcs kernel on this device is enqueued on it.
    device : pyopencl.Device
    platform_id, device_id : int
        Indices in the platform list (the ``"P:D"`` spec).
    kind : str
        "gpu", "cpu" or "accelerator".
    name : str
        "platform name: device name", as recorded in results.
    max_mem_alloc, global_mem, local_mem : int
        Largest single buffer, global memory and local memory per work-group, bytes.
    max_work_group_size, compute_units : int
    has_int64_atomics, has_fp64 : bool
        Whether cl_khr_int64_base_atomics / cl_khr_fp64 are supported.
    """

    def __init__(self, platform_id: int, device_id: int):
        import pyopencl

        ocl = _ocl()
        self.platform_id = int(platform_id)
        self.device_id = int(device_id)
        from .icd import create_context

        # Without the GIL where the ICD loader allows (the other threads of a run go on).
        self.context = create_context(
            pyopencl.get_platforms()[self.platform_id].get_devices()[self.device_id])
        if self.context is None:
            self.context = ocl.create_context(platformid=self.platform_id,
                                              deviceid=self.device_id)
        self.device = self.context.devices[0]
        self.queue = pyopencl.CommandQueue(self.context)
        dev = self.device
        t = dev.type
        self.kind = (
            "gpu" if t & pyopencl.device_type.GPU
            else "cpu" if t & pyopencl.device_type.CPU
            else "accelerator"
        )
        self.name = f"{dev.platform.name.strip()}: {dev.name.strip()}"
        self.max_mem_alloc = int(dev.max_mem_alloc_size)
        self.global_mem = int(dev.global_mem_size)
        self.local_mem = int(dev.local_mem_size)
        self.max_work_group_size = int(dev.max_work_group_size)
        self.compute_units = int(dev.max_compute_units)
        ext = dev.extensions.split()
        self.has_int64_atomics = "cl_khr_int64_base_atomics" in ext
        self.has_fp64 = "cl_khr_fp64" in ext or bool(getattr(dev, "double_fp_config", 0))
        self._programs: dict[tuple, object] = {}
        self._kernels: dict[int, dict] = {}
        # Each program is built once (a program built twice by two threads would leave kernels
        # cached under the id of the one dropped): the builds in flight, by key.
        self._building: dict[tuple, Future] = {}
        self._build_lock = threading.RLock()

    def side_queue(self, name: str):
        """An in-order queue of this device's context besides :attr:`queue`, one per ``name``,
        made once (each correlator run that reads or uploads beside its kernels uses the same
        ones instead of making its own)."""
        import pyopencl

        with self._build_lock:
            queues = self.__dict__.setdefault("_side_queues", {})
            if name not in queues:
                queues[name] = pyopencl.CommandQueue(self.context)
            return queues[name]

    @property
    def spec(self) -> str:
        return f"{self.platform_id}:{self.device_id}"

    def __repr__(self) -> str:
        return f"OpenCLDevice({self.spec} {self.kind} {self.name!r})"


_DEVICES: dict[tuple[int, int], OpenCLDevice] = {}
_DEVICE_LOCK = threading.RLock()
_SPECS: dict[str | None, tuple[int, int]] = {}


def _parse_spec(device) -> tuple[str, tuple[int, int] | None]:
    """Return ("kind", None) or ("ids", (P, D)) for a device spec; ValueError if malformed."""
    if device is None:
        return "best", None
    if isinstance(device, OpenCLDevice):
        return "ids", (device.platform_id, device.device_id)
    if isinstance(device, (tuple, list)) and len(device) == 2:
        return "ids", (int(device[0]), int(device[1]))
    if not isinstance(device, str):
        raise TypeError(f"device must be None, 'cpu', 'gpu' or 'P:D', not {type(device).__name__}")
    spec = device.strip().lower()
    if spec in ("", "auto", "any", "all"):
        return "best", None
    if spec in _KINDS:
        return spec, None
    parts = spec.split(":")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        return "ids", (int(parts[0]), int(parts[1]))
    raise ValueError(
        f"invalid OpenCL device {device!r}: use None, 'cpu', 'gpu', 'accelerator' or "
        "'platform:device' indices such as '0:1'"
    )


def _select(kind: str) -> tuple[int, int] | None:
    ocl = _ocl()
    ids = ocl.select_device(type=_KINDS[kind], best=True)
    return tuple(ids) if ids else None


def get_device(device=None) -> OpenCLDevice:
    """Return the OpenCL device for ``device`` (see the module docstring), cached.

    Raises
    ------
    OpenCLUnavailableError
        No OpenCL platform, no device of the kind asked for, or no device at those indices.
    ValueError, TypeError
        Malformed spec.
    """
    cacheable = device is None or isinstance(device, str)
    if cacheable and device in _SPECS:
        return _DEVICES[_SPECS[device]]
    # One device per (platform, device), even when threads ask at once (``ewoksxpcs run``
    # creates it in a warm-up thread while its steps start).
    with _DEVICE_LOCK:
        return _get_device(device, cacheable)


def _get_device(device, cacheable: bool) -> OpenCLDevice:
    if cacheable and device in _SPECS:
        return _DEVICES[_SPECS[device]]
    how, ids = _parse_spec(device)
    ocl = _ocl()
    if how == "ids":
        p, d = ids
        if not (0 <= p < len(ocl.platforms) and 0 <= d < len(ocl.platforms[p].devices)):
            raise OpenCLUnavailableError(
                f"OpenCL device '{p}:{d}' does not exist; available: {_available()}"
            )
    elif how == "best":
        ids = _select("gpu") or _select("cpu") or _select("accelerator")
        if ids is None:
            raise OpenCLUnavailableError(f"no usable OpenCL device; present: {_available()}")
    else:
        ids = _select(how)
        if ids is None:
            raise OpenCLUnavailableError(
                f"no OpenCL {how.upper() if how == 'gpu' else how} device; available: {_available()}"
            )
    ids = (int(ids[0]), int(ids[1]))
    if ids not in _DEVICES:
        try:
            _DEVICES[ids] = OpenCLDevice(*ids)
        except Exception as e:  # driver refuses the context
            raise OpenCLUnavailableError(f"cannot open OpenCL device '{ids[0]}:{ids[1]}': {e}") from e
        logger.info("OpenCL device %s: %s", _DEVICES[ids].spec, _DEVICES[ids].name)
    if cacheable:
        _SPECS[device] = ids
    return _DEVICES[ids]


def list_devices() -> list[dict]:
    """Every OpenCL device present: dicts with spec "P:D", kind, name, global_mem, compute_units.

    Returns an empty list when there is no OpenCL platform.
    """
    try:
        ocl = _ocl()
    except OpenCLUnavailableError:
        return []
    out = []
    for p, plat in enumerate(ocl.platforms):
        for d, dev in enumerate(plat.devices):
            kind = {"GPU": "gpu", "CPU": "cpu"}.get(dev.type, "accelerator")
            out.append({"spec": f"{p}:{d}", "kind": kind, "name": f"{plat.name}: {dev.name}",
                            "global_mem": int(dev.memory), "compute_units": int(dev.cores)})
    return out


def kernel_source(filename: str) -> str:
    """Text of an OpenCL C file shipped in ``ewoksxpcs.kernels``."""
    try:
        return resources.files("ewoksxpcs.kernels").joinpath(filename).read_text()
    except FileNotFoundError:
        raise ValueError(f"no OpenCL kernel file {filename!r} in ewoksxpcs.kernels") from None


def build_program(dev: OpenCLDevice, filename: str, defines: dict | None = None):
    """Compile ``kernels/<filename>`` (after ``kernels/common.cl``) for ``dev``, cached.

    Programs compile once per (device, file, defines): a thread asking for a program that
    another thread is compiling waits for that build; different programs compile at the same
    time (the driver's compiler runs without the GIL).

    Parameters
    ----------
    dev : OpenCLDevice
    filename : str
        A file of ``ewoksxpcs.kernels``, e.g. ``"dense.cl"``.
    defines : dict, optional
        Compile-time constants passed as ``-D NAME=value`` (``value`` None: ``-D NAME``).
        ``HAS_INT64_ATOMICS`` and ``HAS_FP64`` are added from the device's extensions.

    Returns
    -------
    pyopencl.Program
    """
    key = _program_key(dev, filename, defines)
    program = dev._programs.get(key)
    if program is not None:
        return program
    with dev._build_lock:
        program = dev._programs.get(key)
        if program is not None:
            return program
        building = dev._building.get(key)
        mine = building is None
        if mine:
            building = dev._building[key] = Future()
    if not mine:
        return building.result()
    return _build(dev, key, building)


def _program_key(dev: OpenCLDevice, filename: str, defines: dict | None) -> tuple:
    """(file, sorted defines as strings), with the device's own ``HAS_*`` defines added."""
    defines = dict(defines or {})
    if dev.has_int64_atomics:
        defines.setdefault("HAS_INT64_ATOMICS", 1)
    if dev.has_fp64:
        defines.setdefault("HAS_FP64", 1)
    return (filename, tuple(sorted((str(k), str(v)) for k, v in defines.items())))


def _build(dev: OpenCLDevice, key: tuple, building: Future):
    """Compile the program ``key`` registered as in flight (``building``), publish it."""
    try:
        program = _compile(dev, key)
    except BaseException as e:
        with dev._build_lock:
            del dev._building[key]  # a later call compiles again (and reports its own error)
        building.set_exception(e)
        raise
    with dev._build_lock:
        dev._programs[key] = program
        del dev._building[key]
    building.set_result(program)
    return program


def _compile(dev: OpenCLDevice, key: tuple):
    import pyopencl

    filename, defines = key
    source = kernel_source("common.cl") + "\n" + kernel_source(filename)
    options = [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in defines]
    options.append("-cl-kernel-arg-info")  # the scalar arguments' types: _type_scalar_args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyopencl.CompilerWarning)
        return pyopencl.Program(dev.context, source).build(options=options)


def build_in_background(dev: OpenCLDevice, programs) -> list:
    """Start compiling programs that a later step will ask for, each in a thread of its own.

    Cold builds take 0.2-1 s a program on a GPU; started when the data's type is known, they
    compile while the frames are read and compacted instead of when the step that needs them
    starts. Each program is registered as in flight before this returns, so that the step's
    own :func:`build_program` waits for that build instead of compiling it again; a program
    that was not asked for here is built by the step itself (a wrong guess costs only the
    thread's time). A failed build raises nothing here: the step that needs the program
    compiles it again and meets the error.

    Parameters
    ----------
    dev : OpenCLDevice
    programs : iterable of (str, dict or None)
        (file, defines) as :func:`build_program` takes them.

    Returns
    -------
    list of threading.Thread
        The started threads (not daemons: a thread stopped inside the driver's compiler at
        exit may abort the process).
    """
    threads = []
    for filename, defines in programs:
        key = _program_key(dev, filename, defines)
        with dev._build_lock:
            if key in dev._programs or key in dev._building:
                continue
            building = dev._building[key] = Future()

        def run(key=key, building=building):
            try:
                _build(dev, key, building)
            except Exception:  # the step that needs it compiles it again and raises
                logger.debug("background build of %s failed", key[0], exc_info=True)

        thread = threading.Thread(target=run, name="ewoksxpcs-build", daemon=False)
        thread.start()
        threads.append(thread)
    return threads


def get_kernel(dev: OpenCLDevice, filename: str, name: str, defines: dict | None = None):
    """Kernel ``name`` of :func:`build_program` (dev, filename, defines), cached per program.

    A kernel object keeps its arguments between calls: set all of them at each launch.
    """
    import pyopencl

    program = build_program(dev, filename, defines)
    kernels = dev._kernels.setdefault(id(program), {})
    kernel = kernels.get(name)
    if kernel is None:
        with dev._build_lock:
            kernel = kernels.get(name)
            if kernel is None:
                kernel = pyopencl.Kernel(program, name)
                _type_scalar_args(kernel)
                kernels[name] = kernel
    return kernel


#: OpenCL C scalar types of kernel arguments, as NumPy types.
_SCALAR_TYPES = {
    "char": numpy.int8, "uchar": numpy.uint8, "short": numpy.int16, "ushort": numpy.uint16,
    "int": numpy.int32, "uint": numpy.uint32, "long": numpy.int64, "ulong": numpy.uint64,
    "float": numpy.float32, "double": numpy.float64,
}


def _type_scalar_args(kernel) -> bool:
    """Declare ``kernel``'s scalar argument types to PyOpenCL (from the program's argument
    info), which then packs the scalars itself at each launch; returns whether it did.

    Untyped, PyOpenCL probes each scalar argument's kind in turn, ~10 µs a NumPy scalar: a
    launch of a kernel of 8 buffers and 10 scalars took 113 µs of host time untyped, 25 µs
    typed on the H200's host (107 / 14 µs with PoCL on the 2-core EPYC); the events kernels'
    launches (12 scalars) took 0.15-0.2 ms each. A kernel with a scalar argument of another
    type (a typedef's name) keeps the untyped path.
    """
    import pyopencl

    info = pyopencl.kernel_arg_info
    types = []
    try:
        for i in range(kernel.num_args):
            if kernel.get_arg_info(i, info.ADDRESS_QUALIFIER) \
                    != pyopencl.kernel_arg_address_qualifier.PRIVATE:
                types.append(None)  # a buffer or local memory
                continue
            t = _SCALAR_TYPES.get(str(kernel.get_arg_info(i, info.TYPE_NAME)).strip(" \x00"))
            if t is None:
                return False
            types.append(t)
    except pyopencl.Error:  # no argument info from this driver
        return False
    kernel.set_scalar_arg_dtypes(types)
    return True


#: OpenCL C type of each supported pixel type (the kernels' VAL_T).
CTYPES = {
    "int8": "char", "uint8": "uchar", "int16": "short", "uint16": "ushort",
    "int32": "int", "uint32": "uint", "float32": "float",
}
#: Default device memory budget of a GPU or accelerator: this fraction of its free memory
#: (global memory when the free memory cannot be queried). The rest is left to the driver, the
#: kernels' small buffers and other processes; the whole budget is one step's allocations.
DEVICE_MEMORY_FRACTION = 0.7
#: Default budget of a CPU OpenCL device, whose "device memory" is the host's RAM: this fraction
#: of it, at most ``MAX_DEFAULT_CPU_DEVICE_MEMORY`` (the host also holds the frames and results).
CPU_DEVICE_MEMORY_FRACTION = 0.25
MAX_DEFAULT_CPU_DEVICE_MEMORY = 8 * 1024**3
#: Kept for older callers: the CPU device cap.
MAX_DEFAULT_DEVICE_MEMORY = MAX_DEFAULT_CPU_DEVICE_MEMORY


#: NVML device handles by PCI bus id, once NVML is initialised (None: NVML unusable here).
_NVML_HANDLES: dict | None = None
_NVML_LOCK = threading.Lock()


def _nvml_handles() -> dict | None:
    """{PCI bus id: NVML handle} of the NVIDIA devices, NVML initialised once per process (its
    init and shutdown cost milliseconds, at every correlate when done per query); None when
    ``pynvml`` or the driver's NVML is missing."""
    global _NVML_HANDLES
    with _NVML_LOCK:
        if _NVML_HANDLES is None:
            handles = {}
            try:
                import pynvml

                pynvml.nvmlInit()
                for i in range(pynvml.nvmlDeviceGetCount()):
                    h = pynvml.nvmlDeviceGetHandleByIndex(i)
                    handles[int(pynvml.nvmlDeviceGetPciInfo(h).bus)] = h
            except Exception:
                handles = {}
            _NVML_HANDLES = handles
        return _NVML_HANDLES or None


def free_device_memory(dev: OpenCLDevice) -> int | None:
    """Free memory of a GPU, bytes, or None when it cannot be queried.

    AMD devices report it through ``cl_amd_device_attribute_query``; NVIDIA devices through
    NVML (``pynvml``, when installed; initialised once per process), matched by PCI bus id.
    OpenCL itself has no such query.
    """
    d = dev.device
    try:
        return int(d.global_free_memory_amd[0]) * 1024  # KiB, per memory pool
    except Exception:
        pass
    try:
        bus = int(d.pci_bus_id_nv)
    except Exception:
        return None
    handles = _nvml_handles()
    if not handles or bus not in handles:
        return None
    try:
        import pynvml

        return int(pynvml.nvmlDeviceGetMemoryInfo(handles[bus]).free)
    except Exception:
        return None


def default_device_memory(dev: OpenCLDevice) -> int:
    """Default device memory budget (``max_device_memory`` options), bytes.

    GPUs and accelerators: ``DEVICE_MEMORY_FRACTION`` (70 %) of the free memory (of the global
    memory when it cannot be queried, see :func:`free_device_memory`): 98 GB of an H200's
    141 GB, 11 GB of a 16 GB card. CPU devices: ``CPU_DEVICE_MEMORY_FRACTION`` (25 %) of their
    memory (the host RAM), at most 8 GiB.
    """
    if dev.kind == "cpu":
        return int(min(MAX_DEFAULT_CPU_DEVICE_MEMORY, dev.global_mem * CPU_DEVICE_MEMORY_FRACTION))
    free = free_device_memory(dev)
    total = dev.global_mem if free is None else min(free, dev.global_mem)
    return int(total * DEVICE_MEMORY_FRACTION)


def power_of_two_work_group(dev: OpenCLDevice, gpu: int, cpu: int) -> int:
    """Work-items per group for tree reductions: ``gpu`` or ``cpu`` by device kind, capped by
    the device and rounded down to a power of two."""
    wg = int(min(gpu if dev.kind == "gpu" else cpu, dev.max_work_group_size))
    return 1 << (max(1, wg).bit_length() - 1)


def pinned_empty(dev: OpenCLDevice, shape, dtype) -> numpy.ndarray:
    """A host array in page-locked memory (fast transfers), or a plain array if refused.

    The returned array keeps its OpenCL buffer alive (attribute ``base`` chain).
    """
    import pyopencl

    dtype = numpy.dtype(dtype)
    nbytes = int(numpy.prod(shape)) * dtype.itemsize
    if nbytes == 0:
        return numpy.empty(shape, dtype)
    try:
        mf = pyopencl.mem_flags
        buf = pyopencl.Buffer(dev.context, mf.READ_WRITE | mf.ALLOC_HOST_PTR, nbytes)
        array, _ = pyopencl.enqueue_map_buffer(
            dev.queue, buf, pyopencl.map_flags.READ | pyopencl.map_flags.WRITE, 0, shape, dtype
        )
        return array
    except (pyopencl.Error, MemoryError):  # pinned memory exhausted: pageable memory works
        return numpy.empty(shape, dtype)


def is_pinned(array) -> bool:
    """Whether ``array`` is a view of page-locked memory from :func:`pinned_empty` or
    :func:`~ewoksxpcs.opencl.pools.host_result` (copies to and from the device then need no
    staging)."""
    import pyopencl

    base = array
    while base is not None:
        if isinstance(base, pyopencl.MemoryMap) or getattr(base, "page_locked", False):
            return True
        base = getattr(base, "base", None)
    return False


#: Fills reaching past this byte (offset + size) are done by the ``kernels/fill.cl`` kernels
#: instead of clEnqueueFillBuffer, which hangs or fails on NVIDIA's OpenCL from 2^31 bytes
#: (pyopencl issue #395).
FILL_MAX_BYTES = 2**31 - 1
#: Largest launch of the zeroing kernels (grid-stride loops cover any size).
_ZERO_GLOBAL = 1 << 20
_ZERO_LOCAL = 256


def device_buffer(dev: OpenCLDevice, queue, nbytes: int, zero: bool = False, pool=None):
    """A READ_WRITE device buffer of at least ``nbytes`` bytes (rounded up to a multiple of 8).

    Parameters
    ----------
    dev : OpenCLDevice
    queue : pyopencl.CommandQueue
        Queue of the zeroing, if any (later work on another queue must wait for it).
    nbytes : int
        Bytes needed (>= 0; an empty request gives an 8-byte buffer).
    zero : bool
        Zero the whole buffer (with :func:`zero_buffer`; a pool's buffer may be larger than
        asked: its size classes).
    pool : pyopencl.tools.MemoryPool, optional
        Allocate from it (:func:`~ewoksxpcs.opencl.pools.pooled_buffer`).

    Returns
    -------
    pyopencl.Buffer or pyopencl.PooledBuffer
    """
    import pyopencl

    nbytes = int(nbytes)
    if nbytes < 0:
        raise ValueError(f"device_buffer: nbytes must be >= 0, got {nbytes}")
    size = max(8, -(-nbytes // 8) * 8)
    buf = (pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_WRITE, size) if pool is None
           else pool.allocate(size))
    if zero:
        zero_buffer(dev, queue, buf)
    return buf


def upload_small(dev: OpenCLDevice, queue, a: numpy.ndarray, buffer=None) -> tuple:
    """A READ_ONLY device buffer holding a copy of the small host array ``a``, the copy enqueued
    on ``queue`` without waiting: (buffer, copy's event or None for an empty array). ``buffer``:
    the destination (at least ``a.nbytes``), e.g. a pool's, instead of a new buffer.

    Keep the pair as long as the buffer: PyOpenCL waits for a copy from host memory when its
    event is dropped. Neither a blocking copy nor ``COPY_HOST_PTR`` (which on NVIDIA's driver
    waits for the device's work in flight) stalls the host.
    """
    import pyopencl

    a = numpy.ascontiguousarray(a)
    buf = buffer if buffer is not None else pyopencl.Buffer(
        dev.context, pyopencl.mem_flags.READ_ONLY, max(a.nbytes, 8))
    event = pyopencl.enqueue_copy(queue, buf, a, is_blocking=False) if a.nbytes else None
    return buf, event


def zero_buffer(dev: OpenCLDevice, queue, buf, offset: int = 0, nbytes: int | None = None,
                wait_for=None):
    """Enqueue the zeroing of bytes ``offset`` … ``offset + nbytes - 1`` of ``buf``, any size.

    Ranges ending within the first :data:`FILL_MAX_BYTES` bytes use clEnqueueFillBuffer; larger
    ones the ``zero_words``/``zero_bytes`` kernels of ``kernels/fill.cl`` (NVIDIA's fill hangs
    on 2^31 bytes or more). Not blocking: the returned event (None for an empty range) marks
    the end; work enqueued later on the same in-order ``queue`` sees zeros.

    Parameters
    ----------
    dev : OpenCLDevice
    queue : pyopencl.CommandQueue
    buf : pyopencl.Buffer
    offset : int
        First byte.
    nbytes : int, optional
        Bytes to zero (default: to the end of the buffer).
    wait_for : list of pyopencl.Event, optional
        Events the zeroing waits for.
    """
    import pyopencl

    size = int(buf.size)
    offset = int(offset)
    nbytes = size - offset if nbytes is None else int(nbytes)
    if offset < 0 or nbytes < 0 or offset + nbytes > size:
        raise ValueError(
            f"zero_buffer: bytes {offset} … {offset + nbytes - 1} are outside the buffer of "
            f"{size} bytes")
    if nbytes == 0:
        return None
    if offset + nbytes <= FILL_MAX_BYTES:
        aligned = offset % 8 == 0 and nbytes % 8 == 0
        pattern = numpy.zeros(1, numpy.uint64 if aligned else numpy.uint8)
        return pyopencl.enqueue_fill_buffer(queue, buf, pattern, offset, nbytes,
                                            wait_for=wait_for)
    # An unaligned head and tail byte by byte, the aligned middle as 64-bit words.
    head = min(-offset % 8, nbytes)
    words = (nbytes - head) // 8
    tail = nbytes - head - 8 * words
    parts = [("zero_bytes", offset, head), ("zero_words", (offset + head) // 8, words),
             ("zero_bytes", offset + head + 8 * words, tail)]
    event = None
    for name, first, n in parts:
        if n == 0:
            continue
        kernel = get_kernel(dev, "fill.cl", name)
        kernel.set_args(buf, numpy.uint64(first), numpy.uint64(n))
        local = min(_ZERO_LOCAL, dev.max_work_group_size)
        glob = min(_ZERO_GLOBAL, -(-n // local) * local)
        event = pyopencl.enqueue_nd_range_kernel(queue, kernel, (glob,), (local,),
                                                 wait_for=wait_for if event is None else None)
    return event


_COPY_POOL = None
_COPY_POOL_LOCK = threading.Lock()
#: Copies larger than this are split over threads (NumPy releases the GIL while copying).
THREADED_COPY_BYTES = 16 * 1024**2


def copy_into(dst: numpy.ndarray, src: numpy.ndarray, threaded_from: int | None = None) -> None:
    """dst[...] = src, split over a few threads along the first axis for large arrays (from
    ``threaded_from`` bytes on; default :data:`THREADED_COPY_BYTES`).

    Filling pinned staging buffers is the host-side bottleneck of uploads (one memcpy per byte
    that goes to the device); one thread copies ~5-10 GB/s, a few together saturate memory.
    """
    def part(a, b):
        dst[a:b] = src[a:b]

    _over_rows(dst.shape[0], dst.nbytes, part, threaded_from)


def _over_rows(n: int, nbytes: int, part, threaded_from: int | None = None) -> None:
    """``part(a, b)`` over rows a … b-1 of ``n``, by a few threads when ``nbytes`` is large."""
    global _COPY_POOL
    if nbytes < (THREADED_COPY_BYTES if threaded_from is None else threaded_from) or n < 2:
        part(0, n)
        return
    from concurrent.futures import ThreadPoolExecutor

    n_threads = max(1, min(8, (os.cpu_count() or 1)))
    with _COPY_POOL_LOCK:
        if _COPY_POOL is None:
            _COPY_POOL = ThreadPoolExecutor(max_workers=n_threads,
                                            thread_name_prefix="ewoksxpcs-copy")
    edges = numpy.linspace(0, n, min(n_threads, n) + 1).astype(int).tolist()
    list(_COPY_POOL.map(lambda i: part(edges[i], edges[i + 1]), range(len(edges) - 1)))


class StagingSlots:
    """Page-locked staging buffers of (frames, frame_pixels), allocated on first use.

    Frames that already lie in page-locked memory need none (:func:`upload_chunk`), and a
    page-locked allocation of a few hundred MB costs tens of milliseconds.
    """

    def __init__(self, dev: OpenCLDevice, shape, dtype, n: int = 2):
        self.dev, self.shape, self.dtype = dev, tuple(shape), numpy.dtype(dtype)
        self._slots = [None] * n

    def __getitem__(self, s: int) -> numpy.ndarray:
        if self._slots[s] is None:
            self._slots[s] = pinned_empty(self.dev, self.shape, self.dtype)
        return self._slots[s]


def upload_chunk(queue, dst, piece: numpy.ndarray, staging: StagingSlots, slot: int,
                 wait_for=None, boxes=None):
    """Enqueue the copy of ``piece`` (n, ...) to the device buffer ``dst``, without blocking.

    A page-locked ``piece`` (:func:`is_pinned`, e.g. frames the caller keeps in
    :func:`pinned_empty` memory) is copied from where it lies; anything else is first copied
    into ``staging[slot]``, whose previous copy the caller must have waited for.

    ``boxes``, for a 2-D ``piece`` (n, frame pixels): only that part of each frame crosses
    the bus, packed as (n, ``boxes.packed_pixels``) (the staging buffer holds packed frames;
    :func:`~ewoksxpcs.opencl.frame_boxes.frame_layout` chooses): the rectangles of a
    :class:`~ewoksxpcs.opencl.frame_boxes.FrameBoxes`, by rectangular copies from a page-locked
    ``piece`` (else gathered by threads with their padding); those of a
    :class:`~ewoksxpcs.opencl.frame_boxes.GatheredBoxes`, gathered without padding by threads
    (each a share of the frames); or the pixels of a
    :class:`~ewoksxpcs.opencl.frame_boxes.PixelRuns`, gathered by threads (each a share of the
    runs over all the frames: few calls, disjoint columns).

    Returns
    -------
    event : pyopencl.Event
        The copy (the last one: ``queue`` is in order).
    direct : bool
        True when ``piece`` itself is being read: the caller must wait for ``event`` before the
        producer of ``piece`` may reuse its memory.
    """
    import pyopencl

    from .frame_boxes import FrameBoxes, PixelRuns

    direct = is_pinned(piece) and piece.flags.c_contiguous
    if boxes is not None and not boxes.whole:
        n, isz = piece.shape[0], piece.itemsize
        ny, nx = boxes.shape
        packed = boxes.packed_pixels
        if isinstance(boxes, FrameBoxes) and direct:  # rectangles read where they lie
            event, pitch = None, boxes.pitch * isz
            for (y0, y1, x0, x1), row in zip(boxes.boxes, boxes.row_offsets[:-1].tolist()):
                event = pyopencl.enqueue_copy(
                    queue, dst, piece, buffer_origin=(0, row, 0),
                    host_origin=(x0 * isz, y0, 0), region=((x1 - x0) * isz, y1 - y0, n),
                    buffer_pitches=(pitch, packed * isz),
                    host_pitches=(nx * isz, ny * nx * isz), is_blocking=False,
                    wait_for=wait_for if event is None else None)
            return event, True
        # gathered into the staging buffer (page-locked memory allocated on first use)
        host = staging[slot].reshape(-1)[: n * packed].reshape(n, packed)
        frames = piece.reshape(n, ny * nx)
        if isinstance(boxes, PixelRuns):  # threads share the runs (disjoint columns)
            _over_rows(boxes.n_runs, host.nbytes, lambda a, b: boxes.gather(frames, host, a, b))
        else:  # rectangles, padded or not: threads share the frames
            _over_rows(n, host.nbytes, lambda a, b: boxes.gather(frames[a:b], host[a:b]))
        return pyopencl.enqueue_copy(queue, dst, host, is_blocking=False, wait_for=wait_for), False
    if direct:
        host = piece
    else:
        host = staging[slot].reshape(-1)[: piece.size].reshape(piece.shape)
        copy_into(host, piece)
    event = pyopencl.enqueue_copy(queue, dst, host, is_blocking=False, wait_for=wait_for)
    return event, direct


#: Size and number of the pinned staging buffers of :func:`upload_pinned` (kept per device).
STAGING_BYTES = 32 * 1024**2
STAGING_COUNT = 4


def shared_staging(dev: OpenCLDevice):
    """The device's pinned staging buffers (allocated once: pinning memory is slow) and lock."""
    with _COPY_POOL_LOCK:
        st = getattr(dev, "_staging", None)
        if st is None or st[0][0].size < STAGING_BYTES:
            bufs = [pinned_empty(dev, (STAGING_BYTES,), numpy.uint8) for _ in range(STAGING_COUNT)]
            st = dev._staging = (bufs, st[1] if st is not None else threading.Lock())
    return st


def upload_pinned(dev: OpenCLDevice, queue, items, on_item=None) -> None:
    """Copy host arrays into device buffers through pinned staging buffers; blocking.

    Host → device copies from pageable memory run at a fraction of the bus speed (the driver
    stages them through its own small pinned buffers, one thread). Here pieces of
    :data:`STAGING_BYTES` are copied by several threads into a ring of pinned buffers while
    the previous pieces travel to the device. Returns when every copy is complete, so it can
    run in a background thread while the caller prepares (or enqueues) other work.

    Parameters
    ----------
    dev : OpenCLDevice
    queue : pyopencl.CommandQueue
        Queue of the copies (use one of its own when called from a thread).
    items : iterable of (pyopencl.Buffer, ndarray[, int[, dtype]])
        Destination buffer, C-contiguous host array, byte offset in the buffer (default 0) and
        the type the array has on the device (default its own): converted (C cast, values
        the caller knows to fit) while it is copied into the staging buffers, e.g. frame
        indices below 65 536 sent as uint16.
    on_item : callable, optional
        ``on_item(i, event)`` once the copies of item ``i`` are all enqueued; ``event`` (None
        for an empty array) completes with them, so that work on another queue can wait for
        it. Called from the uploading thread.
    """
    import pyopencl

    bufs, lock = shared_staging(dev)
    piece = max(1, min(STAGING_BYTES, bufs[0].size))
    with lock:
        events = [None] * len(bufs)
        slot = 0
        for i, item in enumerate(items):
            dst, src = item[0], item[1]
            offset = int(item[2]) if len(item) > 2 else 0
            as_type = numpy.dtype(item[3]) if len(item) > 3 and item[3] is not None else None
            flat = numpy.ascontiguousarray(src).reshape(-1)
            last = None
            if as_type is not None and as_type != flat.dtype:
                last, slot = _staged_copies(queue, dst, flat, offset, as_type, bufs, events,
                                            slot, piece)
            elif is_pinned(flat):  # already page-locked: straight to the device
                if flat.size:
                    last = pyopencl.enqueue_copy(queue, dst, flat, dst_offset=offset,
                                                 is_blocking=False)
                    queue.flush()
            else:  # byte for byte
                last, slot = _staged_copies(queue, dst, flat.view(numpy.uint8), offset,
                                            numpy.dtype(numpy.uint8), bufs, events, slot, piece)
            if on_item is not None:
                on_item(i, last)  # in-order queue: the last copy ends after the item's others
        queue.finish()


def _staged_copies(queue, dst, src: numpy.ndarray, offset: int, as_type: numpy.dtype, bufs,
                   events: list, slot: int, piece: int):
    """:func:`upload_pinned`'s copies of the 1-D ``src`` as ``as_type`` (the same type, bytes,
    or a narrower one): each staging buffer in turn (from ``slot`` on, its previous copy in
    ``events`` waited for) receives up to ``piece`` bytes of converted elements, copied by
    threads, then goes to ``dst`` at byte ``offset`` on. Returns the last copy's event (None
    if ``src`` is empty) and the next slot."""
    import pyopencl

    per_piece = max(1, piece // as_type.itemsize)
    last = None
    for a in range(0, src.size, per_piece):
        b = min(a + per_piece, src.size)
        s = slot % len(bufs)
        slot += 1
        if events[s] is not None:
            events[s].wait()  # the buffer's previous piece has left
        host = bufs[s][: (b - a) * as_type.itemsize].view(as_type)
        copy_into(host, src[a:b])  # the C cast of NumPy's assignment
        last = events[s] = pyopencl.enqueue_copy(queue, dst, host,
                                                 dst_offset=offset + a * as_type.itemsize,
                                                 is_blocking=False)
        queue.flush()
    return last, slot


#: Device → host reads of at least this many bytes go through the pinned staging ring
#: (:func:`download_pinned`); smaller ones straight into the destination.
DOWNLOAD_PINNED_BYTES = 1024**2
#: Bytes per piece of those reads: the first pieces' host copies overlap the later ones' transfers.
DOWNLOAD_PIECE_BYTES = 4 * 1024**2
#: Reads of at least this many bytes go in pieces of a whole staging buffer instead, copied out by
#: several threads (:func:`copy_into`): one thread copying 4 MiB pieces into fresh pageable
#: memory (page faults) made the 4 GB of two-time maps of an Eiger 4M x 10 000 run seconds slower.
LARGE_DOWNLOAD_BYTES = 128 * 1024**2


#: Bytes of a memory page of the host (:meth:`StagedReads.prefault`).
PAGE_BYTES = mmap.PAGESIZE
#: Reads of :class:`StagedReads` copy out of the staging buffers with threads from this size on.
THREADED_READ_BYTES = 1024**2


class PendingRead:
    """A read of :class:`StagedReads`: ``wait()`` (once or more) waits for it and fills its
    destination (``then()``: the copy out of the ring), as an event's ``wait()``."""

    def __init__(self, event, then=None):
        self._event, self._then = event, then

    def wait(self) -> None:
        if self._event is not None:
            self._event.wait()
            self._event = None
            if self._then is not None:
                self._then()


class StagedReads:
    """Reads of whole device buffers into the pinned staging ring at bus speed, enqueued at
    once and copied out by a few threads when the caller waits for them.

    NVIDIA's driver stages reads into pageable memory itself, ~12 GB/s on the H200 (one after
    the other, and 8 GB/s into fresh pages, which a result's arrays are); here the bus runs at
    ~50 GB/s and the host's copies into the destination (page faults included) go in parallel.
    One staging buffer per read: a read larger than one, beyond the ring, into page-locked
    memory (:func:`is_pinned`: at bus speed) or from a CPU device (no bus) goes straight into
    its destination. Holds the ring (its lock) until
    :meth:`close`: use as a context manager, and make no other staged copy meanwhile.

    Parameters
    ----------
    dev : OpenCLDevice
    queue : pyopencl.CommandQueue
        Queue of the reads.
    staged : bool, optional
        Through the ring (default: unless ``dev`` is a CPU).
    """

    def __init__(self, dev: OpenCLDevice, queue, staged: bool | None = None):
        self.dev, self.queue = dev, queue
        if staged is None:
            staged = dev.kind != "cpu"
        self._bufs, self._lock = shared_staging(dev) if staged else ([], None)
        if self._lock is not None:
            self._lock.acquire()
        self._used = 0
        self._untaken = {}  # destinations of staged reads not yet waited for, by read

    def read(self, dst: numpy.ndarray, src, wait_for=None) -> "PendingRead":
        """Enqueue dst[...] = the first ``dst.nbytes`` bytes of ``src`` (C-contiguous ``dst``,
        not touched until then); the returned read's ``wait()`` fills ``dst``."""
        import pyopencl

        if not dst.flags.c_contiguous:
            raise ValueError("StagedReads: the destination must be C-contiguous")
        flat = dst.reshape(-1).view(numpy.uint8)
        if (self._used >= len(self._bufs) or flat.size > self._bufs[0].size
                or flat.size < DOWNLOAD_PINNED_BYTES or is_pinned(dst)):
            return PendingRead(pyopencl.enqueue_copy(self.queue, dst, src, is_blocking=False,
                                                     wait_for=wait_for) if flat.size else None)
        host = self._bufs[self._used][: flat.size]
        key = self._used
        self._used += 1
        self._untaken[key] = flat
        event = pyopencl.enqueue_copy(self.queue, host, src, is_blocking=False,
                                      wait_for=wait_for)
        self.queue.flush()

        def copy_out():
            self._untaken.pop(key, None)
            copy_into(flat, host, threaded_from=THREADED_READ_BYTES)

        return PendingRead(event, copy_out)

    def prefault(self) -> None:
        """Have the kernel map the staged reads' destinations now (one write per page), e.g.
        while the host waits for the device: a result's arrays are fresh pages, which the
        copies out of the ring would otherwise fault in one by one (~8 GB/s on the H200's
        host, with or without threads). Reads already waited for are left as they are."""
        for flat in self._untaken.values():
            flat[::PAGE_BYTES] = 0

    def close(self) -> None:
        """Wait for the reads enqueued, release the ring."""
        if self._lock is not None:
            self.queue.finish()  # no read may land in a buffer handed on
            self._lock.release()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def download_pinned(dev: OpenCLDevice, queue, dst: numpy.ndarray, src, wait_for=None) -> None:
    """dst[...] = the first ``dst.nbytes`` bytes of the device buffer ``src``; blocking.

    Device → host copies into pageable memory run at a fraction of the bus speed (NVIDIA's
    driver stages them itself: ~2.5 GB/s measured for n2 on an H200). Here pieces of
    :data:`DOWNLOAD_PIECE_BYTES` (whole staging buffers from :data:`LARGE_DOWNLOAD_BYTES` on) land
    in the pinned ring of :func:`shared_staging` at bus speed and are copied out while the next
    pieces travel. A page-locked ``dst`` (:func:`is_pinned`)
    or one under :data:`DOWNLOAD_PINNED_BYTES` is read directly.

    Parameters
    ----------
    dev : OpenCLDevice
    queue : pyopencl.CommandQueue
        Queue of the reads.
    dst : ndarray
        C-contiguous host array, written in place.
    src : pyopencl.Buffer
        At least ``dst.nbytes`` bytes.
    wait_for : list of pyopencl.Event, optional
        Events the first read waits for.
    """
    import pyopencl

    if not dst.flags.c_contiguous:
        raise ValueError("download_pinned: the destination must be C-contiguous")
    if dst.nbytes < DOWNLOAD_PINNED_BYTES or is_pinned(dst):
        if dst.nbytes:
            pyopencl.enqueue_copy(queue, dst, src, wait_for=wait_for)
        return
    flat = dst.reshape(-1).view(numpy.uint8)
    bufs, lock = shared_staging(dev)
    piece = bufs[0].size if flat.size >= LARGE_DOWNLOAD_BYTES else DOWNLOAD_PIECE_BYTES
    piece = max(1, min(piece, bufs[0].size))
    starts = list(range(0, flat.size, piece))
    with lock:
        pending = {}  # piece index -> (staging buffer, its read)

        def read(k):
            a = starts[k]
            host = bufs[k % len(bufs)][: min(piece, flat.size - a)]
            pending[k] = host, pyopencl.enqueue_copy(queue, host, src, src_offset=a,
                                                     is_blocking=False,
                                                     wait_for=wait_for if k == 0 else None)

        for k in range(min(len(bufs), len(starts))):
            read(k)
        queue.flush()
        for k, a in enumerate(starts):
            host, event = pending.pop(k)
            event.wait()
            copy_into(flat[a: a + host.size], host)
            if k + len(bufs) < len(starts):  # the buffer is free again
                read(k + len(bufs))
                queue.flush()
