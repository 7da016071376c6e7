"""Kernels of the device's bitshuffle-LZ4 decoder, timed per kernel and checked (issue 10).

::

    python -m ewoksxpcs.tools.bench_bslz4_kernels --out bslz4.json          # Eiger 4M, a GPU
    python -m ewoksxpcs.tools.bench_bslz4_kernels --device cpu --frames 4 --shape 256 256

Data: an Eiger scan written by :func:`~ewoksxpcs.tools.synthetic_eiger.write_eiger_scan`
(uint16 bitshuffle-LZ4, gap pixels at 65535) at 0.01 and 0.1 counts; its raw chunks are read
once and uploaded back to back. Each variant (:data:`VARIANTS`: the ``global`` kernels, work-item
per block, and ``local`` ones, work-group per block, with other work-group sizes and sequence
caps, and with one step switched off to time the others) decodes every frame in batches of
``--batch`` chunks on a profiling queue; the record gives each kernel's device time and the wall
time of the whole decode, both scaled to 10 000 frames, and whether the output equals h5py's
(first frames) and the first variant's (all frames). Variants with a step switched off give
wrong output by design (``equal_*`` false).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy

#: (kernels, work-items per group, sequence cap, measurement switches) of each variant.
VARIANTS = (
    ("global", 64, 64, ""),
    ("local", 32, 64, ""),
    ("local", 64, 64, ""),
    ("local", 32, 32, ""),
    ("local", 32, 64, "DBG_NO_MATCH"),
    ("local", 32, 64, "DBG_NO_UNSHUFFLE"),
    ("local", 32, 64, "DBG_NO_WALK"),
    ("local", 32, 64, "DBG_NO_WALK DBG_NO_UNSHUFFLE"),
)


def raw_chunks(directory: str):
    """(list of compressed chunks, frame shape, first frames read by h5py) of a scan."""
    import h5py
    import hdf5plugin  # noqa: F401  (h5py's reference read)

    chunks, ref, shape = [], None, None
    for name in sorted(n for n in os.listdir(directory) if n.startswith("data_")):
        with h5py.File(os.path.join(directory, name), "r") as f:
            d = f["entry/data/data"]
            shape = d.shape[1:]
            if ref is None:
                ref = d[: min(4, d.shape[0])]
            chunks += [d.id.read_direct_chunk((i, 0, 0))[1] for i in range(d.shape[0])]
    return chunks, shape, ref


def time_variants(dev, chunks, shape, ref, batch: int = 230, variants=VARIANTS,
                  report=print) -> list:
    """Decode ``chunks`` with every variant; one record (dict) per variant."""
    import pyopencl

    from ..opencl import bslz4_decoder as bd

    n = len(chunks)
    npix = int(shape[0] * shape[1])
    offsets = numpy.zeros(n + 1, numpy.int64)
    offsets[1:] = numpy.cumsum([len(c) for c in chunks])
    data = numpy.frombuffer(b"".join(chunks), numpy.uint8)
    mf = pyopencl.mem_flags
    d_comp = pyopencl.Buffer(dev.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=data)
    d_out = pyopencl.Buffer(dev.context, mf.READ_WRITE, n * npix * 2)
    qprof = pyopencl.CommandQueue(
        dev.context, properties=pyopencl.command_queue_properties.PROFILING_ENABLE)
    records, first = [], None
    saved = bd.LOCAL_WG, bd.LOCAL_SEQ_CAP
    try:
        for kernels, wg, seq, switches in variants:
            bd.LOCAL_WG, bd.LOCAL_SEQ_CAP = wg, seq

            class Decoder(bd.BSLZ4Decoder):
                def _defines(self, aligned, _switches=switches):
                    defines = super()._defines(aligned)
                    defines.update((name, None) for name in _switches.split())
                    return defines

            decoder = Decoder(dev, numpy.uint16, npix, kernels=kernels)

            def run(queue):
                for a in range(0, n, batch):
                    b = min(n, a + batch)
                    decoder.decode(d_comp, offsets[a:b + 1], d_out, out_offset=a * npix * 2,
                                   queue=queue, first_chunk=a)

            run(dev.queue)  # compile, warm up
            launched = []
            enqueue = pyopencl.enqueue_nd_range_kernel

            def recorded(queue, kernel, *args, **kwargs):
                event = enqueue(queue, kernel, *args, **kwargs)
                launched.append((kernel.function_name, event))
                return event

            pyopencl.enqueue_nd_range_kernel = recorded
            try:
                run(qprof)
            finally:
                pyopencl.enqueue_nd_range_kernel = enqueue
            qprof.finish()
            per = {}
            for name, event in launched:
                per[name] = per.get(name, 0.0) + 1e-9 * (event.profile.end - event.profile.start)
            t0 = time.perf_counter()
            run(dev.queue)
            dev.queue.finish()
            wall = time.perf_counter() - t0
            out = numpy.empty((n, npix), numpy.uint16)
            pyopencl.enqueue_copy(dev.queue, out, d_out)
            scale = 10000 / n
            rec = {"kernels": kernels, "work_group": wg, "seq_cap": seq,
                   "switched_off": switches or None,
                   "wall_s_per_10k": round(wall * scale, 4),
                   "kernel_s_per_10k": {k: round(v * scale, 4) for k, v in per.items()},
                   "equal_h5py": bool(numpy.array_equal(out[: ref.shape[0]].reshape(ref.shape),
                                                        ref)),
                   "equal_first_variant": True if first is None else
                   bool(numpy.array_equal(out, first))}
            if first is None:
                first = out
            records.append(rec)
            if report is not None:
                report(json.dumps(rec))
    finally:
        bd.LOCAL_WG, bd.LOCAL_SEQ_CAP = saved
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="gpu")
    parser.add_argument("--frames", type=int, default=460, help="frames per case")
    parser.add_argument("--shape", type=int, nargs=2, default=(2162, 2068))
    parser.add_argument("--counts", type=float, nargs="+", default=(0.01, 0.1))
    parser.add_argument("--batch", type=int, default=230, help="chunks per decode call")
    parser.add_argument("--workdir", help="where the scans are written (default: temporary)")
    parser.add_argument("--out", help="JSON file of the records")
    args = parser.parse_args(argv)

    from ..opencl.device import get_device
    from .synthetic_eiger import write_eiger_scan

    dev = get_device(args.device)
    print(f"device {dev.name}", flush=True)
    work = args.workdir or tempfile.mkdtemp(prefix="ewoksxpcs-bslz4-")
    records = []
    for counts in args.counts:
        directory = os.path.join(work, f"scan_{counts}")
        if not os.path.exists(os.path.join(directory, "scan.h5")):
            write_eiger_scan(directory, n_frames=args.frames, shape=tuple(args.shape),
                             counts=counts, frames_per_file=max(1, args.frames // 2))
        chunks, shape, ref = raw_chunks(directory)
        size = sum(len(c) for c in chunks)
        print(f"counts {counts}: {len(chunks)} chunks, {size / 1e6:.1f} MB compressed",
              flush=True)
        for rec in time_variants(dev, chunks, shape, ref, batch=args.batch):
            records.append({"counts": counts, "frames": len(chunks), **rec})
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": dev.name, "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
