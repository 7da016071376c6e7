"""``ewoksxpcs benchmark --suite overhead``: the fixed costs of ``ewoksxpcs run``, stage by stage.

An Eiger 4M geometry scan (2162×2068 uint16, bitshuffle-LZ4, Bliss master + 16 data files,
:func:`ewoksxpcs.tools.synthetic_eiger.write_eiger_scan`) of a few hundred frames and a label
image of 16 rings (so that the PNG has 16 curves). Then, each ``repeat`` times (best kept):

- ``ewoksxpcs --version`` and ``import ewoksxpcs.app.cli`` in a new process;
- the import time of the big dependencies in a new process each (``python -X importtime``);
- ``ewoksxpcs run scan.h5 --qmask labels.npy -o r.h5`` (plus ``run_options``, e.g. a method)
  in a new process that stamps the time (since the process started, so Python's own start-up
  counts) of: the CLI imported, ewokscore imported, each workflow task's start and end, the
  first frame read (raw chunks or h5py), the q-mask binning, the OpenCL device and program
  builds, the fit, the NeXus writing, the wait for the PNG after it and the commit;
- the same run with the OpenCL kernel caches off (pyopencl's on-disk cache, NVIDIA's, PoCL's:
  :data:`ewoksxpcs.tools.benchmark_e2e.COLD_ENV`): what the caches save a new process;
- the same run twice through one process (``main()`` called again, as a persistent worker
  runs jobs): the second run's stamps.

With ``baseline`` (a source checkout of another version, e.g. ``git archive`` of main
unpacked), each round also runs the new-process and persistent-worker cases with that version
first on ``PYTHONPATH``, interleaved with this one, for a before/after under the same load.

Every process compiles its modules' bytecode once into ``WORKDIR/pycache``
(``PYTHONPYCACHEPREFIX``, set also when the environment has ``PYTHONDONTWRITEBYTECODE``, as
the development machine does): otherwise an editable install compiles the package's ~70
modules from source in every run (0.5 s of CPU that an installed package does not pay).

The stamps come from wrappers put around those functions in the measuring process (nothing is
changed but the clock readings), each when its module is imported by the run itself (an
import hook), so that the run imports everything when and where it would anyway; the measured
processes run in the work directory (``python -c`` puts the working directory first on the
module path: a baseline on PYTHONPATH would lose to a checkout there). Machine-independent
enough to find the costs on a CPU; the correlation itself depends on the machine and method.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

import numpy

__all__ = ["run_overhead", "ring_labels", "PROBE", "probe", "stages", "table"]

#: Modules whose import cost is listed (each in a new process).
IMPORTS = ("numpy", "h5py", "hdf5plugin", "ewokscore", "pyopencl", "silx.opencl.common",
           "scipy.fft", "scipy.optimize", "matplotlib.figure")

#: Instruments ``ewoksxpcs.app.cli.main`` (argv in ``sys.argv[1]``, runs in ``sys.argv[2]``)
#: and prints the stamps of each run as JSON lines; ``first_read_modules``: the top-level
#: modules imported at the first frame read of the first run, ``end_modules`` after the run.
PROBE = r"""
import json, os, sys, time
_t0 = time.perf_counter()

def _age():  # seconds since this process started (Python's start-up included)
    with open("/proc/self/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return up - start / os.sysconf("SC_CLK_TCK")

_base = _age() - (time.perf_counter() - _t0)
marks = []
seen = {}

def mark(what):
    marks.append((round(_base + time.perf_counter() - _t0, 4), what))

def wrap(owner, name, label, static=False):
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        mark(label + " start")
        try:
            return real(*args, **kwargs)
        finally:
            mark(label + " end")

    setattr(owner, name, staticmethod(wrapper) if static else wrapper)

# The wrappers are put in place when their module is imported (a finder ahead of the others
# wraps the loader), so that the run imports each module when and where it would anyway:
# importing ewokscore here before main() would move its cost ahead of the run's warm-up.
import importlib.abc
import importlib.util

_after_import = {}  # module name -> hook(module), run once the module is executed


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        hook = _after_import.pop(name, None)
        if hook is None:
            return None
        spec = importlib.util.find_spec(name)  # the real finders (this hook is gone)
        real_exec = spec.loader.exec_module

        def exec_module(module):
            mark(name + " import start")
            real_exec(module)
            mark(name + " imported")
            hook(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _AfterImport())


def first(real, static=False):
    def wrapper(*args, **kwargs):
        if not seen:
            seen["modules"] = sorted(m for m in sys.modules if "." not in m)
            pngproc = sys.modules.get("ewoksxpcs.io.pngproc")
            seen["png_helper"] = pngproc is not None and pngproc.helper_pid() is not None
            mark("first frame read")
            mark(f"cpu {time.process_time():.4f} s")
        return real(*args, **kwargs)
    return staticmethod(wrapper) if static else wrapper


def _chunks(chunks):
    chunks.read_chunks = first(chunks.read_chunks)


def _load(load):
    load.HDF5FrameSource._read_from = first(load.HDF5FrameSource._read_from, static=True)


def _task(task):
    wrap(task.Task, "execute", "task")
    real_execute = task.Task.execute

    def execute(self, *args, **kwargs):
        marks.append((marks[-1][0], "  = " + type(self).__name__))
        return real_execute(self, *args, **kwargs)

    task.Task.execute = execute


def _save(save):
    wrap(save, "_write_nexus", "write nexus")
    wrap(save, "commit", "commit")


def _save_task(save_task):
    wrap(save_task, "fit_decays", "fit")
    real_formats = save_task.save_formats

    def save_formats(*args, **kwargs):
        out = real_formats(*args, **kwargs)
        marks.append((marks[-1][0], f"png wait {out.get('png_wait_s', 0):.4f} s, drawn in "
                                    f"{out.get('png_drawn_in')}"))
        return out

    save_task.save_formats = save_formats


def _device(device):
    wrap(device, "get_device", "opencl device")
    wrap(device, "build_program", "opencl program")


_after_import.update({
    "ewoksxpcs.io.hdf5chunks": _chunks,
    "ewoksxpcs.io.load": _load,
    "ewokscore": lambda module: None,  # its import start and end are stamped
    "ewokscore.task": _task,
    "ewoksxpcs.io.save": _save,
    "ewoksxpcs.tasks.save_results": _save_task,
    "ewoksxpcs.workflow.pipeline": lambda m: wrap(m, "make_binning", "binning"),
    "ewoksxpcs.opencl.device": _device,
})
mark("python started")
import ewoksxpcs.app.cli as cli
mark("cli imported")
argv = json.loads(sys.argv[1])
first_read_modules = None
for run in range(int(sys.argv[2])):
    if run:
        marks.clear()
        seen.clear()
        mark("next run")
    rc = cli.main(argv)
    mark("main returned")
    first_read_modules = first_read_modules or seen.get("modules")
    print(json.dumps({"rc": rc, "marks": marks, "first_read_modules": first_read_modules,
                      "package": os.path.dirname(sys.modules["ewoksxpcs"].__file__),
                      "png_helper_at_first_read": seen.get("png_helper"),
                      "end_modules": sorted(m for m in sys.modules if "." not in m)}),
          flush=True)
"""


def ring_labels(shape, n_rings: int = 16, gaps=None) -> numpy.ndarray:
    """(Ny, Nx) int32 label image of ``n_rings`` rings around the centre (0 outside and on
    ``gaps``)."""
    ny, nx = shape
    y, x = numpy.ogrid[:ny, :nx]
    r = numpy.hypot(y - ny / 2.0, x - nx / 2.0)
    r_max = 0.48 * min(ny, nx)
    labels = numpy.where(r < r_max, 1 + (n_rings * r / r_max).astype(numpy.int32), 0)
    labels = numpy.minimum(labels, n_rings).astype(numpy.int32)
    if gaps is not None:
        labels[gaps] = 0
    return labels


def _best(times):
    return min(times) if times else float("nan")


def _wall(argv, env=None) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def import_times(modules: Sequence[str] = IMPORTS) -> dict:
    """Cumulative import time (s) of each module in a new process, after Python's start-up."""
    out = {}
    for name in modules:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {name}"],
                              capture_output=True, text=True)
        best = 0
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)", line)
            if m and m.group(2) == name:
                best = max(best, int(m.group(1)))
        out[name] = best / 1e6
    return out


def probe(argv, runs: int = 1, env: Optional[dict] = None, cwd: Optional[str] = None) -> list:
    """Run :data:`PROBE` with ``argv`` ``runs`` times in one new process (``env``: added to
    the environment; ``cwd``: its working directory, which comes first on the module path of
    ``python -c``: a baseline on PYTHONPATH needs one without a checkout); its JSON lines
    (``package``: the directory of the ewoksxpcs it ran)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), str(runs)],
                          capture_output=True, text=True, env=dict(os.environ, **(env or {})),
                          cwd=cwd)
    if proc.returncode:
        raise RuntimeError(f"probe failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def stages(marks) -> dict:
    """Durations (s) between the stamps of one run: start-up, each task, the parts inside."""
    t = {}
    first = {}
    for when, what in marks:
        first.setdefault(what, when)
        t[what] = when
    out = {}

    def span(a, b, name):
        if a in first and b in t:
            out[name] = t[b] - first[a] if b != a else 0.0

    start = "python started" if "python started" in first else "next run"
    origin = first[start]
    if start == "python started":  # times from the process's start
        out["python start-up"] = origin
        origin = 0.0
    span(start, "cli imported", "cli import")
    span("ewokscore import start", "ewokscore imported", "ewokscore import")
    order = [w for _, w in marks if w.startswith("  = ")]
    tasks = [w[4:] for w in order]
    task_marks = [(when, what) for when, what in marks if what in ("task start", "task end")]
    for i, name in enumerate(tasks):
        if 2 * i + 1 < len(task_marks):
            out[f"task {name}"] = task_marks[2 * i + 1][0] - task_marks[2 * i][0]
    if task_marks:
        out["to first task"] = task_marks[0][0] - origin
    if "first frame read" in first:
        out["to first frame read"] = first["first frame read"] - origin
        cpu = [float(w.split()[1]) for _, w in marks if w.startswith("cpu ")]
        if cpu and origin == 0.0:  # CPU time of the process (all its threads) by then
            out["CPU time to first frame read"] = cpu[0]
    for label in ("binning", "opencl device", "fit", "write nexus", "commit"):
        total = 0.0
        opened = None
        for when, what in marks:
            if what == f"{label} start" and opened is None:
                opened = when
            elif what == f"{label} end" and opened is not None:
                total += when - opened
                opened = None
        if f"{label} start" in first:
            out[label] = total
    builds = [m for m in marks if m[1].startswith("opencl program")]
    if builds:
        out["opencl programs"] = sum(b[0] - a[0] for a, b in zip(builds[::2], builds[1::2]))
    for _, what in marks:
        m = re.match(r"png wait ([0-9.]+) s, drawn in (\w+)", what)
        if m:
            out["png wait after the result is written"] = float(m.group(1))
            out["png drawn in"] = m.group(2)
    out["total"] = t["main returned"] - origin
    return out


def _bytecode_env(workdir: str, pythonpath: Optional[str] = None) -> dict:
    """Environment of the measured processes: bytecode cached under ``workdir`` (module
    docstring), ``pythonpath`` first on the path (a baseline checkout)."""
    env = {"PYTHONPYCACHEPREFIX": os.path.join(workdir, "pycache"),
           "PYTHONDONTWRITEBYTECODE": ""}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.abspath(pythonpath)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def run_overhead(workdir: Optional[str] = None, n_frames: int = 200, counts: float = 0.01,
                 run_options: Sequence[str] = (), repeat: int = 2, keep: bool = False,
                 on_step=print, shape=None, processes: int = 0,
                 baseline: Optional[str] = None) -> dict:
    """Generate the scan and measure the fixed costs (module docstring).

    ``shape`` (default: Eiger 4M) and ``processes`` (writers of the scan) are those of
    :func:`~ewoksxpcs.tools.synthetic_eiger.write_eiger_scan`. ``baseline``: a source
    checkout of another version (its ``ewoksxpcs`` package directory's parent), measured in
    the same rounds.

    Returns
    -------
    dict
        ``version_s``, ``cli_import_s``, ``imports`` (module -> s), ``runs`` (per kind: the
        best ``stages`` of ``repeat`` runs: "new process", "kernel caches off", "persistent
        worker (2nd run)"),
        ``first_read_modules``, ``load`` (load averages before and after).
    """
    from .synthetic_eiger import eiger_gap_mask, write_eiger_scan
    from .benchmark_e2e import COLD_ENV, EIGER_4M

    shape = tuple(shape or EIGER_4M)
    out = {"frames": n_frames, "shape": list(shape), "counts": counts,
           "run_options": list(run_options), "load": [os.getloadavg()]}
    with _directory(workdir, keep) as workdir:
        workdir = os.path.abspath(workdir)  # the measured processes run there
        master = os.path.join(workdir, "scan", "scan.h5")
        if not os.path.exists(master):
            master = write_eiger_scan(os.path.join(workdir, "scan"), n_frames=n_frames,
                                      shape=shape, counts=counts, processes=processes,
                                      frames_per_file=-(-n_frames // 16))
        else:  # a scan of the workdir: its own frame count and shape
            from ..io.load import load_frames

            source = load_frames(master)
            out["frames"], shape = int(source.n_frames), tuple(source.frame_shape)
            out["shape"] = list(shape)
        labels = os.path.join(workdir, "labels16.npy")
        numpy.save(labels, ring_labels(shape, 16, eiger_gap_mask(shape)))
        exe = [sys.executable, "-m", "ewoksxpcs"]
        out["version_s"] = _best([_wall(exe + ["--version"]) for _ in range(repeat)])
        out["cli_import_s"] = _best([_wall([sys.executable, "-c", "import ewoksxpcs.app.cli"])
                                     for _ in range(repeat)])
        on_step(f"--version {out['version_s']:.3f} s, import ewoksxpcs.app.cli "
                f"{out['cli_import_s']:.3f} s")
        out["imports"] = import_times()
        on_step("imports: " + ", ".join(f"{k} {v:.3f} s" for k, v in out["imports"].items()))
        argv = ["run", master, "--qmask", labels, "-o", os.path.join(workdir, "r.h5"),
                "--overwrite", "-q", *run_options]
        env = _bytecode_env(workdir)
        base_env = _bytecode_env(workdir, baseline) if baseline else None
        for e in filter(None, (env, base_env)):  # the bytecode of every module, once
            subprocess.run([sys.executable, "-c", "import ewoksxpcs.app.cli as c, ewoksxpcs, "
                            "ewoksxpcs.tasks, ewoksxpcs.correlators, ewoksxpcs.io.save"],
                           env=dict(os.environ, **e), capture_output=True, cwd=workdir)
        kinds = {"new process": [], "kernel caches off": [], "persistent worker (2nd run)": []}
        if baseline:
            kinds.update({"baseline: new process": [], "baseline: worker (2nd run)": []})
        base_dir = os.path.realpath(baseline) if baseline else None

        def measured(env, runs=1, which=0, base=False):
            got = probe(argv, runs=runs, env=env, cwd=workdir)
            package = os.path.realpath(got[0].get("package", ""))
            if base and not package.startswith(base_dir + os.sep):
                raise RuntimeError(f"the baseline run imported ewoksxpcs from {package}, not "
                                   f"from {baseline!r}")
            return got[which]

        for _ in range(repeat):
            if baseline:  # first in each round: the same load for both, in turn
                kinds["baseline: new process"].append(
                    stages(measured(base_env, base=True)["marks"]))
            one = measured(env)
            kinds["new process"].append(stages(one["marks"]))
            kinds["kernel caches off"].append(stages(measured(dict(env, **COLD_ENV))["marks"]))
            out["first_read_modules"] = one["first_read_modules"]
            out["png_helper_at_first_read"] = one.get("png_helper_at_first_read")
            if baseline:
                kinds["baseline: worker (2nd run)"].append(
                    stages(measured(base_env, runs=2, which=1, base=True)["marks"]))
            kinds["persistent worker (2nd run)"].append(
                stages(measured(env, runs=2, which=1)["marks"]))
    out["runs"] = {k: min(v, key=lambda s: s["total"]) for k, v in kinds.items()}
    out["load"].append(os.getloadavg())
    on_step(table(out))
    return out


@contextlib.contextmanager
def _directory(workdir: Optional[str], keep: bool):
    """``workdir`` (created), or a temporary directory removed at the end unless ``keep``."""
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        yield workdir
        return
    path = tempfile.mkdtemp(prefix="ewoksxpcs-overhead-")
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def table(out: dict) -> str:
    """The measured costs as a text table (one column per run kind)."""
    kinds = list(out.get("runs", {}))
    names = []
    for k in kinds:
        names += [n for n in out["runs"][k] if n not in names]
    lines = [f"ewoksxpcs run, {out['frames']} frames of {out['shape'][0]}x{out['shape'][1]} "
             f"uint16 bitshuffle-LZ4 (Bliss master + 16 files), {out['counts']:g} counts, 16 "
             f"rings; options: {' '.join(out['run_options']) or '(defaults)'}",
             f"load average before/after: {out['load'][0][0]:.1f} / "
             f"{out['load'][-1][0]:.1f}",
             f"ewoksxpcs --version                      {out['version_s']:8.3f} s",
             f"python -c 'import ewoksxpcs.app.cli'     {out['cli_import_s']:8.3f} s"]
    for k, v in out.get("imports", {}).items():
        lines.append(f"import {k:34s}{v:8.3f} s (new process, -X importtime)")
    lines.append(f"{'stage (s)':40s}" + "".join(f"{k:>30s}" for k in kinds))
    for n in names:
        cells = []
        for k in kinds:
            v = out["runs"][k].get(n)
            cells.append(f"{v:30.3f}" if isinstance(v, float) else f"{str(v or '-'):>30s}")
        lines.append(f"{n:40s}" + "".join(cells))
    heavy = sorted(set(out.get("first_read_modules") or ()) & {
        "matplotlib", "scipy", "dask", "distributed", "celery", "pyFAI", "Orange", "PyQt5",
        "ewoksjob"})
    lines.append(f"heavy modules imported at the first frame read: {heavy or 'none'}")
    if out.get("png_helper_at_first_read") is not None:
        lines.append("PNG helper process running at the first frame read: "
                     f"{'yes' if out['png_helper_at_first_read'] else 'no'}")
    return "\n".join(lines)
