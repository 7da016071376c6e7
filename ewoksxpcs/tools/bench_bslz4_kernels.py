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
    """(compressed chunks back to back (uint8), their offsets (n + 1,) int64, frame shape,
    the first frames as h5py reads them) of the scan in ``directory``."""
    from ..io.hdf5chunks import read_chunks
    from ..io.load import load_frames

    source = load_frames(os.path.join(directory, "scan.h5"))
    layout, why = source.chunk_layout()
    if layout is None:
        raise ValueError(f"{directory}: its chunks cannot be read raw ({why})")
    data, offsets = read_chunks(layout, 0, layout.n_chunks)
    source.decode_threads = 1  # the reference: h5py's own decoding
    ref = source.read_frames(range(min(4, source.n_frames)))
    return data, offsets, tuple(source.frame_shape), ref


def time_variants(dev, data, offsets, shape, ref, batch: int = 230, variants=VARIANTS,
                  report=print) -> list:
    """Decode the chunks of :func:`raw_chunks` (``data``, ``offsets``) with every variant; one
    record (dict) per variant."""
    import pyopencl

    from ..opencl import bslz4_decoder as bd

    n = offsets.size - 1
    npix = int(shape[0] * shape[1])
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
        data, offsets, shape, ref = raw_chunks(directory)
        n = offsets.size - 1
        print(f"counts {counts}: {n} chunks, {offsets[-1] / 1e6:.1f} MB compressed",
              flush=True)
        for rec in time_variants(dev, data, offsets, shape, ref, batch=args.batch):
            records.append({"counts": counts, "frames": n, **rec})
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": dev.name, "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
