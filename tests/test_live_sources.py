"""io/live.py: frames of a scan followed while a writer process writes them (HDF5 SWMR, Lima
files, a Bliss scan in a real Redis read through blissdata), the writer killed mid-scan, the
Redis memory trimmed (frames then read from the file), bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy
import pytest

import _live_writers as W
from redis_server import redis_stack_url  # noqa: F401  (session fixture: a real Redis + modules)

from ewoksxpcs.io.live import BlissScanSource, GrowingHDF5Source, open_live_source
from ewoksxpcs.io.reader_process import raw_chunks

WRITER = os.path.join(os.path.dirname(__file__), "_live_writers.py")


def start_writer(kind: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WRITER, kind, json.dumps(kwargs)])


def read_all(source, kill=None, kill_at=None):
    """All chunks of ``source``; the process ``kill`` is killed once ``kill_at`` frames came."""
    chunks = []
    for chunk in source.iter_chunks():
        chunks.append(chunk)
        if kill is not None and source.frames_read >= kill_at and kill.poll() is None:
            kill.kill()
    return numpy.concatenate(chunks) if chunks else None


@pytest.fixture
def writer():
    processes = []

    def start(kind, **kwargs):
        processes.append(start_writer(kind, **kwargs))
        return processes[-1]

    yield start
    for p in processes:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.fixture(scope="module")
def store(redis_stack_url):  # noqa: F811
    """The data store's URL without its database number (sources append /<scan key>)."""
    from blissdata.redis_engine.store import DataStore

    url = redis_stack_url.rsplit("/", 1)[0]
    DataStore(url, init_db=True)
    return url


# ------------------------------------------------------------------------------ growing HDF5
def test_growing_hdf5_read_while_written(tmp_path, writer):
    filename = str(tmp_path / "scan.h5")
    writer("hdf5", filename=filename, seed=1, n=240, chunk=20, period=0.03)
    source = GrowingHDF5Source(f"{filename}::/1.1", quiet_timeout=10, wait_timeout=20,
                               chunk_frames=16)
    assert source.n_frames is None and source.frame_shape == (24, 32)
    assert source.frame_period == pytest.approx(0.01)  # acq_expo_time next to the data
    frames = read_all(source)
    numpy.testing.assert_array_equal(frames, W.frames(1, 240))
    assert source.n_frames == 240 and source.ended_early == ""
    with pytest.raises(RuntimeError, match="read once"):
        next(source.iter_chunks())


def test_growing_hdf5_writer_killed(tmp_path, writer):
    filename = str(tmp_path / "scan.h5")
    p = writer("hdf5", filename=filename, seed=2, n=240, chunk=20, period=0.02, stop_at=100)
    source = GrowingHDF5Source(f"{filename}::/1.1", quiet_timeout=1.0, wait_timeout=20)
    frames = read_all(source, kill=p, kill_at=100)
    assert p.poll() is not None  # killed mid-scan
    numpy.testing.assert_array_equal(frames, W.frames(2, 240)[:100])
    assert source.n_frames == 100
    assert source.ended_early.startswith("scan ended early at frame 100: no new frame for 1 s")


def test_lima_files_one_after_another(tmp_path, writer):
    writer("lima", directory=str(tmp_path), seed=3, n=230, per_file=50, period=0.05)
    master = tmp_path / "scan.h5"
    source = open_live_source(f"{master}::/1.1", files=str(tmp_path / "eiger_*.h5"),
                              expected_frames=230, quiet_timeout=10, wait_timeout=20)
    frames = read_all(source)
    numpy.testing.assert_array_equal(frames, W.frames(3, 230))
    assert source.n_frames == 230 and source.ended_early == ""


def test_fewer_frames_than_announced(tmp_path, writer):
    filename = str(tmp_path / "scan.h5")
    writer("hdf5", filename=filename, seed=4, n=60, chunk=30, period=0.0)
    source = GrowingHDF5Source(f"{filename}::/1.1", expected_frames=100, wait_timeout=20)
    assert read_all(source).shape[0] == 60
    assert source.ended_early == "scan ended early at frame 60: 60 of the 100 frames announced"


def test_growing_hdf5_never_appears(tmp_path):
    with pytest.raises(ValueError, match="no frames to follow after 0.2 s"):
        GrowingHDF5Source(f"{tmp_path / 'missing.h5'}::/1.1", wait_timeout=0.2)
    with pytest.raises(ValueError, match="URL of the frames"):
        GrowingHDF5Source()
    with pytest.raises(ValueError, match="quiet_timeout"):
        GrowingHDF5Source(f"{tmp_path / 'missing.h5'}::/1.1", quiet_timeout=0)


# ------------------------------------------------------------------------------ blissdata
def test_bliss_scan_read_as_published(tmp_path, writer, store):
    key_file = str(tmp_path / "key")
    writer("bliss", url=store, seed=5, n=300, chunk=25, period=0.03, key_file=key_file)
    source = open_live_source(f"{store}/{W.wait_key(key_file)}", quiet_timeout=10, wait_timeout=20)
    assert isinstance(source, BlissScanSource)
    assert source.expected_frames == 300 and source.frame_period == pytest.approx(0.01)
    frames = read_all(source)
    numpy.testing.assert_array_equal(frames, W.frames(5, 300))
    assert source.ended_early == "" and source.frames_from_file == 0


def test_bliss_frames_no_longer_in_memory_come_from_the_file(tmp_path, store):
    import redis
    from blissdata.redis_engine.store import DataStore

    key_file = str(tmp_path / "key")
    fallback = str(tmp_path / "eiger_0000.h5")
    W.publish_scan(store, seed=6, n=200, chunk=20, period=0.0, key_file=key_file,
                   fallback=fallback)
    key = W.wait_key(key_file)
    stream = DataStore(store).load_scan(key).streams["eiger:image"]
    # What Bliss's memory tracker does when Redis fills up: the oldest entries go.
    redis.Redis.from_url(store).xtrim(stream.key, maxlen=3, approximate=False)
    source = BlissScanSource(store, key, fallback=f"{fallback}::/entry_0000/measurement/data",
                             quiet_timeout=5, wait_timeout=5)
    frames = read_all(source)
    numpy.testing.assert_array_equal(frames, W.frames(6, 200))
    assert 0 < source.frames_from_file < 200
    # Without a file to fall back on: one line naming the missing frames.
    source = BlissScanSource(store, key, quiet_timeout=5, wait_timeout=5)
    with pytest.raises(RuntimeError, match="no longer in Redis memory and no fallback file"):
        read_all(source)


def test_bliss_writer_killed(tmp_path, writer, store):
    key_file = str(tmp_path / "key")
    p = writer("bliss", url=store, seed=7, n=300, chunk=20, period=0.02, key_file=key_file,
               stop_at=120)
    source = BlissScanSource(store, W.wait_key(key_file), quiet_timeout=1.0, wait_timeout=20)
    frames = read_all(source, kill=p, kill_at=120)
    assert p.poll() is not None
    numpy.testing.assert_array_equal(frames, W.frames(7, 300)[:120])
    assert source.ended_early.startswith("scan ended early at frame 120: no new frame for 1 s")


def test_bliss_bad_input(tmp_path, store):
    from blissdata.redis_engine.store import DataStore
    from blissdata.streams.default import Stream

    scan = DataStore(store).create_scan(
        {"name": "x", "number": 2, "data_policy": "no", "session": "t", "proposal": "p",
         "collection": "c", "dataset": "d"})
    scan.create_stream(Stream.make_definition("diode", "float64"))
    scan.prepare()
    with pytest.raises(TimeoutError, match="did not start within 0.3 s"):
        BlissScanSource(store, scan.key, wait_timeout=0.3)
    scan.start()
    with pytest.raises(ValueError, match="has no stream 'eiger:image'"):
        BlissScanSource(store, scan.key, stream="eiger:image")
    with pytest.raises(ValueError, match="0 image streams"):
        BlissScanSource(store, scan.key)
    with pytest.raises(ValueError, match="give the scan key"):
        open_live_source(store)
    scan.stop()
    scan.close()


@pytest.mark.parametrize("in_process", [True, False])
def test_growing_hdf5_raw_chunks_while_written(tmp_path, writer, in_process):
    """iter_raw_chunks: the stored bitshuffle-LZ4 chunks of a growing file as they come
    (decoded here on the host to check them); a chunk stored without its filter comes decoded.
    Read by a process of its own (the default) or in this one: the same items."""
    from ewoksxpcs.io.live import RawChunks

    filename = str(tmp_path / "scan.h5")
    writer("hdf5", filename=filename, seed=5, n=120, chunk=10, period=0.03, codec="bslz4",
           unfiltered=[37])
    source = GrowingHDF5Source(f"{filename}::/1.1", quiet_timeout=10, wait_timeout=20,
                               chunk_frames=16, read_in_process=in_process)
    assert source.raw_codec() == ("bslz4", "")
    items = list(raw_chunks(source))
    raw = [item for item in items if isinstance(item, RawChunks)]
    decoded = [item for item in items if not isinstance(item, RawChunks)]
    assert len(decoded) == 1 and decoded[0].shape == (1, 24, 32)  # frame 37
    assert all(item.codec == "bslz4" and item.n_frames <= 16 for item in raw)
    frames = numpy.concatenate([item.decode() if isinstance(item, RawChunks) else item
                                for item in items])
    numpy.testing.assert_array_equal(frames, W.frames(5, 120))
    assert source.n_frames == 120 and source.frames_read == 120 and source.ended_early == ""


def test_raw_chunks_reader_process_writer_killed(tmp_path, writer):
    """The reading process sees the writer stop: the frames it got, and "scan ended early"
    copied back to the caller's source; the source is read once."""
    filename = str(tmp_path / "scan.h5")
    p = writer("hdf5", filename=filename, seed=9, n=200, chunk=10, period=0.02, codec="bslz4",
               stop_at=70)
    source = GrowingHDF5Source(f"{filename}::/1.1", quiet_timeout=1.0, wait_timeout=20)
    frames = []
    for item in raw_chunks(source):
        frames.append(item.decode())
        if source.frames_read >= 70 and p.poll() is None:
            p.kill()
    numpy.testing.assert_array_equal(numpy.concatenate(frames), W.frames(9, 200)[:70])
    assert source.n_frames == source.frames_read == 70
    assert source.ended_early.startswith("scan ended early at frame 70: no new frame for 1 s")
    with pytest.raises(RuntimeError, match="read once"):
        next(raw_chunks(source))


def _reader_children() -> list:
    """Process ids of this process's children running ewoksxpcs.io.reader_process."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:  # gone meanwhile
            continue
        if ppid == os.getpid() and b"ewoksxpcs.io.reader_process" in cmdline:
            found.append(int(pid))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_raw_chunks_reader_process_errors_and_close(tmp_path, writer):
    """An error of the reading process is raised here with its message; closing the items
    early stops the process."""
    filename = str(tmp_path / "scan.h5")
    writer("hdf5", filename=filename, seed=10, n=400, chunk=10, period=0.02, codec="bslz4")
    source = GrowingHDF5Source(f"{filename}::/1.1", quiet_timeout=10, wait_timeout=20)
    items = raw_chunks(source, chunk_frames=5)
    next(items)
    assert len(_reader_children()) == 1
    items.close()
    assert _reader_children() == []
    # A source expecting other frames than the file's: the child's error, raised here.
    other = GrowingHDF5Source(f"{filename}::/1.1", quiet_timeout=10, wait_timeout=20)
    other.frame_shape = (24, 31)
    with pytest.raises(ValueError, match=r"chunks of \(24, 32\) uint16 frames, expected"):
        list(raw_chunks(other))


def test_growing_hdf5_raw_codec_of_other_layouts(tmp_path, writer):
    """Chunks of several frames: no raw chunks (the frames are read decoded, as always)."""
    filename = str(tmp_path / "scan.h5")
    writer("hdf5", filename=filename, seed=6, n=40, chunk=20, period=0.0)
    source = GrowingHDF5Source(f"{filename}::/1.1", quiet_timeout=10, wait_timeout=20)
    codec, why = source.raw_codec()
    assert codec is None and "20 frames per chunk" in why
    frames = numpy.concatenate(list(source.iter_raw_chunks()))
    numpy.testing.assert_array_equal(frames, W.frames(6, 40))


def test_raw_chunks_split_into_pieces(tmp_path):
    """RawChunks.split: pieces of at most n frames, each decoding to its frames."""
    import h5py
    import hdf5plugin

    from ewoksxpcs.io.hdf5chunks import read_chunks, stored_frame_chunks
    from ewoksxpcs.io.live import RawChunks

    frames = W.frames(8, 11)
    filename = str(tmp_path / "f.h5")
    with h5py.File(filename, "w") as f:
        f.create_dataset("d", data=frames, chunks=(1, 24, 32), **hdf5plugin.Bitshuffle())
    with h5py.File(filename, "r") as f:
        layout, _ = stored_frame_chunks(f["d"], 2, 11)
    raw = RawChunks(layout, *read_chunks(layout, 0, layout.n_chunks))
    pieces = list(raw.split(4))
    assert [p.n_frames for p in pieces] == [4, 4, 1]
    assert [int(p.layout.first_frame[0]) for p in pieces] == [0, 0, 0]
    numpy.testing.assert_array_equal(numpy.concatenate([p.decode() for p in pieces]),
                                     frames[2:])
    assert list(raw.split(20)) == [raw]


def test_raw_chunks_reader_process_from_an_unguarded_script(tmp_path):
    """A user's script without ``if __name__ == "__main__"`` reads through the reading
    process (a new interpreter that does not import the script again)."""
    import h5py
    import hdf5plugin

    frames = W.frames(11, 30)
    filename = str(tmp_path / "done.h5")
    with h5py.File(filename, "w") as f:
        f.create_dataset("1.1/measurement/det", data=frames, chunks=(1,) + frames.shape[1:],
                         **hdf5plugin.Bitshuffle())
        f["1.1/end_time"] = "now"
    script = tmp_path / "user_script.py"
    script.write_text(
        "import numpy\n"
        "from ewoksxpcs.io.live import GrowingHDF5Source\n"
        "from ewoksxpcs.io.reader_process import raw_chunks\n"
        f"source = GrowingHDF5Source({filename + '::/1.1'!r}, quiet_timeout=5)\n"
        "n = sum(item.n_frames for item in raw_chunks(source))\n"
        "print('frames', n, source.n_frames, repr(source.ended_early))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "frames 30 30 ''"
