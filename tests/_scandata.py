"""Small Bliss-like scan files for the reprocessing, job-queue and Orange tests."""

from __future__ import annotations

import os

import numpy

from ewoksxpcs.tools.synthetic import SyntheticXPCS

SHAPE = (24, 24)


def make_scans(directory, n_scans: int, n_frames: int = 60, shape=SHAPE, n_bins: int = 4):
    """Write ``n_scans`` scan files ``scan_<i>.h5`` (entry ``/1.1``, detector ``eiger``) and a
    label image ``qmask.npy`` into ``directory``.

    Returns
    -------
    urls : list of str
        ``<dir>/scan_<i>.h5::/1.1``
    qmask : str
        Path of the label image (.npy).
    labels : ndarray (Ny, Nx) int32
    """
    os.makedirs(directory, exist_ok=True)
    urls = []
    labels = None
    for i in range(n_scans):
        sim = SyntheticXPCS(shape=shape, n_frames=n_frames, mean_counts=0.3, contrast=0.3,
                            n_bins=n_bins, q_per_pixel=1e-3, diffusion=2e3, frame_period=1e-3,
                            seed=i, dtype="uint8", n_threads=1)
        filename = os.path.join(directory, f"scan_{i}.h5")
        sim.write_bliss_h5(filename, detector="eiger", scan="1.1")
        urls.append(f"{filename}::/1.1")
        labels = sim.labels
    qmask = os.path.join(directory, "qmask.npy")
    numpy.save(qmask, labels)
    return urls, qmask, labels


def frames_of(url):
    """The frames of a scan URL, read whole (small test data only)."""
    import h5py
    import hdf5plugin  # noqa: F401  (bitshuffle-LZ4 frames)

    filename, _, path = url.partition("::")
    with h5py.File(filename, "r") as f:
        return f[path]["instrument/eiger/data"][()]


def check_result(output, url, labels, method, start=0, stop=None):
    """Assert that the result file holds exactly the sums and g2 of ``ewoksxpcs.correlate``."""
    import h5py
    import hdf5plugin  # noqa: F401  (bitshuffle-LZ4 frames)

    from ewoksxpcs import correlate

    frames = frames_of(url)[start:stop]
    expected = correlate(frames, labels, method=method)
    with h5py.File(output, "r") as f:
        process = f["entry/xpcs"]
        assert process["method"][()].decode() == method
        n2 = process["sums/n2"][()]
        g2 = process["g2/g2"][()]
    assert n2.dtype.kind == "i"
    assert numpy.array_equal(n2, expected.n2)
    assert numpy.array_equal(g2, expected.g2, equal_nan=True)
