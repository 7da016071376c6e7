"""A Bliss virtual dataset whose source file (or dataset) is missing is an error naming it: HDF5
itself reads such frames as the fill value, which gave frames of zeros and a "successful"
result."""

from __future__ import annotations

import os

import h5py
import numpy
import pytest

from _faults import assert_cli_refuses, cli_output_args
from ewoksxpcs import correlate
from ewoksxpcs.io.hdf5chunks import chunk_layout
from ewoksxpcs.io.load import load_frames


@pytest.fixture()
def vds_scan(tmp_path):
    """scan.h5::/1.1/measurement/det (30, 6, 8): frames 0-14 from data/a.h5, 15-29 from
    data/b.h5, Bliss style (relative source names, one file per detector chunk)."""
    rng = numpy.random.default_rng(3)
    parts = [rng.poisson(0.8, (15, 6, 8)).astype(numpy.uint16) for _ in range(2)]
    (tmp_path / "data").mkdir()
    layout = h5py.VirtualLayout((30, 6, 8), numpy.uint16)
    for i, (name, part) in enumerate(zip(("a.h5", "b.h5"), parts)):
        with h5py.File(tmp_path / "data" / name, "w") as f:
            f.create_dataset("entry_0000/measurement/data", data=part, chunks=(1, 6, 8))
        layout[15 * i: 15 * (i + 1)] = h5py.VirtualSource(
            f"data/{name}", "entry_0000/measurement/data", shape=part.shape)
    scan = tmp_path / "scan.h5"
    with h5py.File(scan, "w") as f:
        f.create_virtual_dataset("1.1/measurement/det", layout, fillvalue=0)
    labels = numpy.ones((6, 8), numpy.int32)
    labels[:, 4:] = 2
    return str(scan), numpy.concatenate(parts), labels


URL = "::/1.1/measurement/det"


def test_complete_vds_reads_its_frames(vds_scan):
    """The control: with both sources present the frames are read, raw or through h5py."""
    scan, frames, labels = vds_scan
    src = load_frames(scan + URL)
    assert numpy.array_equal(numpy.concatenate(list(src.iter_chunks())), frames)
    assert chunk_layout(scan, "/1.1/measurement/det")[0] is not None
    r = correlate(src, labels, method="reference")
    assert numpy.array_equal(r.n2, correlate(frames, labels, method="reference").n2)


def test_missing_source_file_refused(vds_scan):
    scan, _, _ = vds_scan
    os.remove(os.path.join(os.path.dirname(scan), "data", "b.h5"))
    expect = r"scan\.h5::/1\.1/measurement/det: source file 'data/b\.h5' .* does not exist"
    with pytest.raises(FileNotFoundError, match=expect):
        load_frames(scan + URL)
    with pytest.raises(FileNotFoundError, match=expect):
        chunk_layout(scan, "/1.1/measurement/det")
    # Frames of the other source alone are still readable.
    src = load_frames(scan + URL, stop=15)
    assert src.n_frames == 15


def test_missing_source_dataset_refused(vds_scan):
    scan, _, _ = vds_scan
    with h5py.File(os.path.join(os.path.dirname(scan), "data", "a.h5"), "a") as f:
        del f["entry_0000/measurement/data"]
    with pytest.raises(ValueError, match=r"source dataset 'entry_0000/measurement/data' is "
                                         r"missing from .*a\.h5"):
        load_frames(scan + URL)


def test_cli_refuses_vds_with_missing_source(vds_scan, tmp_path, capsys):
    scan, _, labels = vds_scan
    os.remove(os.path.join(os.path.dirname(scan), "data", "a.h5"))
    qmask = tmp_path / "q.npy"
    numpy.save(qmask, labels)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_cli_refuses(["run", scan + URL, "--qmask", qmask, *cli_output_args(out_dir)],
                       r"source file 'data/a\.h5' of the virtual dataset does not exist",
                       out_dir, capsys)


def test_distributed_reader_refuses_missing_source(vds_scan):
    """The dask engine's reader (workers open the file by name) checks the sources too."""
    from ewoksxpcs.app.distributed import Hdf5Frames

    scan, _, _ = vds_scan
    assert Hdf5Frames(scan, "/1.1/measurement/det").describe()[2] == 30
    os.remove(os.path.join(os.path.dirname(scan), "data", "b.h5"))
    with pytest.raises(FileNotFoundError, match=r"source file 'data/b\.h5'"):
        Hdf5Frames(scan, "/1.1/measurement/det").describe()
    assert Hdf5Frames(scan, "/1.1/measurement/det", stop=15).describe()[2] == 15


def test_unmapped_frames_refused(tmp_path):
    """Frames of a virtual dataset mapped to no source (an aborted scan) would read as zeros."""
    part = numpy.ones((5, 6, 8), numpy.uint16)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = part
    layout = h5py.VirtualLayout((9, 6, 8), numpy.uint16)
    layout[0:5] = h5py.VirtualSource("a.h5", "data", shape=part.shape)
    scan = str(tmp_path / "scan.h5")
    with h5py.File(scan, "w") as f:
        f.create_virtual_dataset("det", layout, fillvalue=0)
    with pytest.raises(ValueError, match=r"scan\.h5::/det: frames 5 to 8 are not mapped"):
        load_frames(scan + "::/det")
    assert load_frames(scan + "::/det", stop=5).n_frames == 5


def test_unreadable_source_file_named(vds_scan):
    scan, _, _ = vds_scan
    with open(os.path.join(os.path.dirname(scan), "data", "b.h5"), "wb") as f:
        f.write(b"not HDF5 at all")
    with pytest.raises(OSError, match=r"source file '.*data/b\.h5' cannot be read as HDF5"):
        load_frames(scan + URL)
