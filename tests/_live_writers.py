"""Writer processes for the live tests: a growing Bliss-like HDF5 scan, Lima files, a Bliss scan
published in Redis through blissdata's own writer API. Run as ``python _live_writers.py KIND
ARGS_JSON``; each writes ``frames(seed, n, shape)`` at ``period`` seconds per chunk and, with
``stop_at``, stops writing after that many frames and sleeps until killed (a writer that died)."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy


def frames(seed: int, n: int, shape=(24, 32)) -> numpy.ndarray:
    """The test frames: Poisson counts, uint16 (n, Ny, Nx)."""
    rng = numpy.random.default_rng(seed)
    return rng.poisson(0.4, (n,) + tuple(shape)).astype(numpy.uint16)


def qmask(shape=(24, 32)) -> numpy.ndarray:
    """Label image of the tests: 4 bins, label 0 unused."""
    y, x = numpy.indices(shape)
    return ((y + x) % 5).astype(numpy.int32)


def wait_key(key_file, timeout=20.0) -> str:
    """The scan key a ``publish_scan`` writer wrote to ``key_file`` (waiting for it)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(key_file):
        if time.monotonic() > deadline:
            raise TimeoutError("the writer did not create its scan")
        time.sleep(0.02)
    with open(key_file) as f:
        return f.read()


def _hang():
    while True:
        time.sleep(1)


def write_hdf5(filename, seed, n, chunk, period, stop_at=None, codec=None, unfiltered=()):
    """Bliss-like scan /1.1/measurement/eiger growing under SWMR; end_time at the end. Stored
    in chunks of ``chunk`` frames, or with ``codec`` ("bslz4" or "none") of one frame each as
    an Eiger writes; the frames ``unfiltered`` then stored without the filter (filter mask)."""
    import h5py

    data = frames(seed, n)
    with h5py.File(filename, "w", libver="latest") as f:
        entry = f.create_group("1.1")
        det = entry.create_group("instrument/eiger")
        layout = {"chunks": (chunk,) + data.shape[1:]}
        if codec is not None:
            import hdf5plugin

            layout = {"chunks": (1,) + data.shape[1:]}
            if codec == "bslz4":
                layout.update(hdf5plugin.Bitshuffle(cname="lz4"))
        dset = det.create_dataset("data", shape=(0,) + data.shape[1:], maxshape=(None,) + data.shape[1:],
                                  dtype=data.dtype, **layout)
        det["acq_parameters/acq_expo_time"] = 0.01
        entry["measurement/eiger"] = dset  # hard link, as Bliss links measurement/<det>
        f.swmr_mode = True
        for t in range(0, n, chunk):
            if stop_at is not None and t >= stop_at:
                f.flush()
                _hang()
            part = data[t:t + chunk]
            dset.resize(t + part.shape[0], axis=0)
            dset[t:] = part
            for i in unfiltered:
                if t <= i < t + part.shape[0]:
                    dset.id.write_direct_chunk((i, 0, 0), data[i].tobytes(), filter_mask=1)
            dset.flush()
            time.sleep(period)
    with h5py.File(filename, "a", locking=False) as f:
        f["1.1/end_time"] = "2026-01-01T00:00:00"


def write_lima(directory, seed, n, per_file, period):
    """Lima data files eiger_NNNN.h5 of ``per_file`` frames, one after another; a master file
    scan.h5 whose /1.1/end_time appears at the end."""
    import h5py

    data = frames(seed, n)
    master = os.path.join(directory, "scan.h5")
    with h5py.File(master, "w") as f:
        f.create_group("1.1")
    for i, t in enumerate(range(0, n, per_file)):
        name = os.path.join(directory, f"eiger_{i:04d}.h5")
        with h5py.File(name + ".part", "w") as f:
            f["entry_0000/measurement/data"] = data[t:t + per_file]
        os.replace(name + ".part", name)  # Lima closes a file before opening the next
        time.sleep(period)
    with h5py.File(master, "a") as f:
        f["1.1/end_time"] = "2026-01-01T00:00:00"


def publish_scan(url, seed, n, chunk, period, key_file, fallback=None, stop_at=None):
    """A Bliss scan in Redis: an image stream of uint16 frames, published chunk by chunk, with
    blissdata's writer API; the scan key is written to ``key_file`` once the scan is created."""
    from blissdata.redis_engine.store import DataStore
    from blissdata.streams.default import Stream

    data = frames(seed, n)
    store = DataStore(url)
    identity = {"name": "xpcs", "number": 1, "data_policy": "no_policy", "session": "test",
                "proposal": "ih0000", "collection": "sample", "dataset": "0001"}
    scan = store.create_scan(identity, info={"npoints": n, "count_time": 0.01})
    stream = scan.create_stream(Stream.make_definition("eiger:image", data.dtype, data.shape[1:]))
    scan.prepare()
    with open(key_file + ".part", "w") as f:
        f.write(scan.key)
    os.replace(key_file + ".part", key_file)
    scan.start()
    if fallback:  # the detector's file, as Lima writes it alongside
        import h5py

        with h5py.File(fallback, "w") as f:
            f["entry_0000/measurement/data"] = data
    for t in range(0, n, chunk):
        if stop_at is not None and t >= stop_at:
            stream.join()
            _hang()
        stream.send(data[t:t + chunk])
        time.sleep(period)
    stream.seal()
    scan.stop()
    scan.close()


if __name__ == "__main__":
    kind, kwargs = sys.argv[1], json.loads(sys.argv[2])
    {"hdf5": write_hdf5, "lima": write_lima, "bliss": publish_scan}[kind](**kwargs)
