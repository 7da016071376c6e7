"""``opencl-events`` equals the reference, exactly for integer events, with any work split."""

from __future__ import annotations

import numpy
import pytest
import _opencl_checks
from _opencl_checks import qmask_of
from conftest import require_opencl

from ewoksxpcs import Binning, EventStack, compact, correlate, create_correlator
from ewoksxpcs.engine.autocorr import autocorrelate
from ewoksxpcs.correlators.opencl_events import STRATEGIES, plan_tasks
from ewoksxpcs.opencl.device import OpenCLUnavailableError, get_device

DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32")

#: Work splits: defaults; tiny lag tiles and tasks (many tiles, pixels split into segments);
#: work-groups of 8 sharing a histogram through local atomics; direct global atomics.
#: s2 on the device (direct int64 sums) and on the host (exact FFTs) on either device kind.
SPLITS = [
    {},
    {"strategy": "local", "lag_tile": 16, "task_pairs": 20, "s2_device": True},
    {"strategy": "local", "lag_tile": 64, "task_pairs": 200, "work_group": 8, "s2_device": False},
    {"strategy": "global", "task_pairs": 50, "work_group": 4, "s2_device": True},
    {"upload_chunks": 3, "task_pairs": 30},  # kernels of each pixel chunk start on its upload
    # Pair-striding "fold" (tasks planned on the device), 32-bit histograms for ≤ 16-bit values:
    # defaults, several lag tiles and work-groups of 8, and tiny tasks over chunks.
    {"strategy": "fold", "s2_device": True},
    {"strategy": "fold", "lag_tile": 16, "work_group": 8, "task_pairs": 37, "s2_device": False},
    {"strategy": "fold", "upload_chunks": 3, "task_pairs": 5, "work_group": 4},
    {"strategy": "local32", "lag_tile": 16, "task_pairs": 20, "work_group": 8},
    {"strategy": "rows", "lag_tile": 16, "task_pairs": 3, "work_group": 8, "upload_chunks": 2},
    # "rows" with blocks of 3 rows per work-item (pixels of fewer events, blocks cut short).
    {"strategy": "rows", "row_block": 3, "lag_tile": 16, "task_pairs": 3, "work_group": 8},
]

#: Every kernel variant, with work-groups of the device's default size (1 on CPUs, 256 on GPUs)
#: and of 8 work-items sharing the histograms.
VARIANTS = [dict(strategy=s, **w) for s in STRATEGIES for w in ({}, {"work_group": 8})] + [
    {"strategy": "rows", "row_block": 1}, {"strategy": "rows", "row_block": 4, "work_group": 8},
    {"strategy": "rows", "row_block": 7}]


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request):
    require_opencl(request.param)
    return request.param


def sparse_frames(rng, dtype, shape, rate=0.3):
    dtype = numpy.dtype(dtype)
    if dtype.kind == "f":
        data = rng.gamma(0.5, 4.0, shape) * (rng.random(shape) < rate)
    else:
        hi = min(int(numpy.iinfo(dtype).max), 2**20)
        data = rng.poisson(rate, shape)
        data.reshape(-1)[::41] = hi  # the type's largest counts (above 2**16 for 32-bit types)
    return data.astype(dtype)


def check_equal(result, ref, dtype):
    _opencl_checks.check_equal(result, ref, dtype, "opencl-events")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_frames", [1, 2, 120])
def test_equals_reference(device, rng, dtype, n_frames):
    frames = sparse_frames(rng, dtype, (n_frames, 7, 13))
    q = qmask_of((7, 13))
    ref = correlate(frames, q, method="reference")
    events = compact(frames)
    for options in SPLITS:
        c = create_correlator(q, method="opencl-events", device=device, **options)
        check_equal(c.correlate(events), ref, dtype)
    # Frames in: compacted on the device first.
    check_equal(correlate(frames, q, method="opencl-events", device=device), ref, dtype)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_heavy_pixel(device, rng, strategy):
    """One pixel lit in every frame among sparse ones: its pairs are split over many tasks."""
    nt = 3000
    frames = (rng.random((nt, 4, 5)) < 0.02).astype(numpy.uint16)
    frames[:, 1, 2] = rng.integers(1, 50, nt)
    q = numpy.ones((4, 5), dtype=numpy.int32)
    expected = autocorrelate(frames.reshape(nt, -1).T.astype(numpy.int64), method="fft").sum(0)
    for extra in ({}, {"row_block": 5}) if strategy == "rows" else ({},):
        res = correlate(frames, q, method="opencl-events", device=device, task_pairs=10_000,
                        lag_tile=512, n_groups=1, strategy=strategy, **extra)
        assert numpy.array_equal(res.n2[0], expected)


def test_large_counts_exact(device, rng):
    """Counts up to 4095 over 70 000 frames of a thin detector: n2 above 2**32, exact."""
    nt = 70_000
    frames = rng.integers(1, 4096, (nt, 1, 3)) * (rng.random((nt, 1, 3)) < 0.08)
    frames = frames.astype(numpy.uint16)
    q = numpy.ones((1, 3), dtype=numpy.int32)
    res = correlate(frames, q, method="opencl-events", device=device)
    expected = autocorrelate(frames.reshape(nt, 3).T.astype(numpy.int64), method="fft").sum(0)
    assert res.n2.max() > 2**32
    assert numpy.array_equal(res.n2.sum(axis=0), expected)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32"])
def test_variants_32bit_histograms_wrap_exactly(device, dtype):
    """Counts at the type's largest value on most pixels of 4 frames, one task: a lag bin of
    its 32-bit local histogram ("fold", "local32" with values of at most 16 bits) passes 2^32,
    many times over for 16 bits, each wrap carried into n2 at once; 32-bit values take 64-bit
    histograms. Every variant equals the reference exactly, on one work-item and on groups
    sharing a histogram."""
    rng = numpy.random.default_rng(7)
    hi = min(int(numpy.iinfo(dtype).max), 2**20)
    side = 160 if hi < 256 else 12  # 8 bits: 2^32 / 255² pairs to wrap
    frames = (rng.random((4, side, side)) < 0.9) * hi
    frames[:, 0, :7] = [0, 1, 2, 3, 1, 0, 5]  # small values beside
    frames = frames.astype(dtype)
    q = numpy.ones((side, side), dtype=numpy.int32)
    ref = correlate(frames, q, method="reference", n_groups=1)
    assert ref.sums.n2.max() > 2**32  # beyond a 32-bit bin
    events = compact(frames)
    for options in VARIANTS:
        c = create_correlator(q, method="opencl-events", device=device, n_groups=1,
                              task_pairs=10**9, **options)
        check_equal(c.correlate(events), ref, dtype)
        wide = numpy.dtype(dtype).itemsize > 2 or options["strategy"] in ("local", "global")
        assert c.last_profile["hist_bits"] == (64 if wide else 32)
        assert c.last_profile["strategy"] == options["strategy"]


@pytest.mark.parametrize("options", VARIANTS,
                         ids=lambda o: f"{o['strategy']}-wg{o.get('work_group', 'default')}"
                                       f"-rb{o.get('row_block', 'default')}")
def test_variants_equal_reference(device, rng, options):
    """Each variant equals the reference exactly on sparse frames of several bins, lag tiles
    of 16 (several tiles) and the defaults, events from the host and resident on the device."""
    from ewoksxpcs.opencl.compact import compact_opencl

    frames = sparse_frames(rng, "uint8", (140, 9, 11), rate=0.4)
    q = qmask_of((9, 11))
    ref = correlate(frames, q, method="reference")
    host, resident = compact(frames), compact_opencl(frames, device=device)
    for extra in ({}, {"lag_tile": 16, "task_pairs": 40}):
        c = create_correlator(q, method="opencl-events", device=device, **options, **extra)
        check_equal(c.correlate(host), ref, "uint8")
        check_equal(c.correlate(resident), ref, "uint8")


def test_gpu_default_is_rows_cpu_default_local():
    """The default kernel variant per device kind ("rows" on GPUs until measured otherwise)."""
    from ewoksxpcs.correlators.opencl_events import OpenCLEventCorrelator

    for kind, expected in (("cpu", "local"), ("gpu", "rows")):
        try:
            c = OpenCLEventCorrelator(numpy.ones((2, 2), dtype=numpy.int32), device=kind)
        except OpenCLUnavailableError:
            continue
        assert c._geometry(False, numpy.dtype("uint8"), 100)[0] == expected
        assert c._geometry(True, numpy.dtype("float32"), 100)[0] == "local"


def test_all_zero_and_empty_pixels(device):
    frames = numpy.zeros((30, 4, 5), dtype=numpy.uint8)
    q = qmask_of((4, 5))
    ref = correlate(frames, q, method="reference")
    res = correlate(frames, q, method="opencl-events", device=device)
    assert not res.n2.any()
    check_equal(res, ref, "uint8")


def test_one_pixel_bins(device, rng):
    frames = sparse_frames(rng, "uint8", (200, 3, 4), rate=0.5)
    q = numpy.arange(1, 13).reshape(3, 4)
    ref = correlate(frames, q, method="reference")
    check_equal(correlate(frames, q, method="opencl-events", device=device), ref, "uint8")


def test_two_calls_identical(device, rng):
    """Nothing left over from a previous call (dynamix keeps its numerator between calls)."""
    q = qmask_of((7, 13))
    c = create_correlator(q, method="opencl-events", device=device)
    for dtype in ("uint16", "float32"):
        events = compact(sparse_frames(rng, dtype, (150, 7, 13)))
        a, b = c.correlate(events), c.correlate(events)
        assert numpy.array_equal(a.n2, b.n2)  # bit for bit, float32 included
        assert numpy.array_equal(a.frame_sums, b.frame_sums)
    ref = correlate(events.to_dense(), q, method="reference")
    check_equal(b, ref, "float32")


def test_negative_values_rejected(device, rng):
    frames = sparse_frames(rng, "int16", (20, 4, 5))
    frames[7, 2, 3] = -2
    q = numpy.ones((4, 5), dtype=numpy.int32)
    with pytest.raises(ValueError, match=r"non-negative.*frame 7.*\(y=2, x=3\)"):
        correlate(frames, q, method="opencl-events", device=device)
    ok = compact(numpy.abs(frames))
    with pytest.raises(ValueError, match="non-negative counts"):  # refused when built
        EventStack(-ok.values, ok.times, ok.offsets, ok.pixel_index, ok.frame_shape,
                   ok.n_frames, ok.dtype)


def test_rebinned_events_and_bad_pixels(device, rng):
    """Events kept without a bin (re-binning) and pixels masked at compaction."""
    frames = sparse_frames(rng, "uint16", (100, 6, 7))
    bad = numpy.zeros((6, 7), dtype=bool)
    bad[0, :2] = True
    events = compact(frames, bad_pixels=bad)
    b = Binning(qmask_of((6, 7)), bad_pixels=bad, n_groups=4)
    ref = correlate(frames, b, method="reference")
    for strategy in STRATEGIES:  # "fold" finds the binned pixels among the kept ones
        check_equal(correlate(events, b, method="opencl-events", device=device,
                              strategy=strategy), ref, "uint16")
    with pytest.raises(ValueError, match="does not hold"):
        correlate(events, qmask_of((6, 7)), method="opencl-events", device=device)


def test_plan_tasks_covers_every_pair_once(rng):
    counts = rng.integers(0, 40, 50)
    counts[3] = 400  # a heavy pixel
    offsets = numpy.concatenate([[0], numpy.cumsum(counts)])
    pix_sub = rng.integers(-1, 5, 50)
    seg_i0, seg_end, seg_cum, task_seg, task_sub = plan_tasks(offsets, pix_sub, 500)
    # Every event of a binned pixel is a first event exactly once, with its pixel's end.
    first = numpy.concatenate([numpy.arange(a, a + n) for a, n in zip(seg_i0, numpy.diff(seg_cum))])
    binned = numpy.concatenate([numpy.arange(offsets[p], offsets[p + 1])
                                for p in range(50) if pix_sub[p] >= 0])
    assert numpy.array_equal(numpy.sort(first), binned)
    pixel_of = numpy.searchsorted(offsets, seg_i0, side="right") - 1
    assert numpy.array_equal(seg_end, offsets[pixel_of + 1])
    # Tasks hold segments of one sub-bin, in sub-bin order, and never exceed the pair budget
    # by more than one segment.
    assert task_seg[0] == 0 and task_seg[-1] == seg_i0.size
    for t in range(task_sub.size):
        segs = numpy.arange(task_seg[t], task_seg[t + 1])
        assert (pix_sub[pixel_of[segs]] == task_sub[t]).all()
        n = numpy.diff(seg_cum)[segs]
        partners = seg_end[segs] - seg_i0[segs]
        pairs = (n * partners - n * (n - 1) // 2).sum()
        assert pairs <= 500 + (partners * (partners + 1) // 2).max()
    assert (numpy.diff(task_sub) >= 0).all()
    # The heavy pixel (80 200 pairs) was split.
    assert (pixel_of == 3).sum() > 100


def test_errors(rng):
    require_opencl("cpu")
    q = numpy.ones((3, 4), dtype=numpy.int32)
    frames = sparse_frames(rng, "uint8", (10, 3, 4))
    with pytest.raises(OpenCLUnavailableError, match="'7:7' does not exist"):
        correlate(frames, q, method="opencl-events", device="7:7")
    with pytest.raises(ValueError, match="lag_tile must be an integer >= 1"):
        create_correlator(q, method="opencl-events", device="cpu", lag_tile=0)
    with pytest.raises(ValueError, match="strategy must be one of fold, rows, local32, local"):
        create_correlator(q, method="opencl-events", device="cpu", strategy="fast")
    with pytest.raises(ValueError, match="row_block must be 1 to 16, got 17"):
        create_correlator(q, method="opencl-events", device="cpu", row_block=17)
    with pytest.raises(ValueError, match="row_block must be an integer >= 1"):
        create_correlator(q, method="opencl-events", device="cpu", row_block=0)


def test_upload_through_small_staging_pieces(device, rng, monkeypatch):
    """values/times cross the pinned staging ring in many pieces, copied by several threads;
    times converted to uint16 on the way, in pieces of whole elements."""
    import pyopencl

    from ewoksxpcs.opencl import device as opencl

    monkeypatch.setattr(opencl, "STAGING_BYTES", 40)  # odd pieces: not multiples of 4 bytes
    monkeypatch.setattr(opencl, "THREADED_COPY_BYTES", 8)
    dev = opencl.get_device(device)
    times = rng.integers(0, 2**16, 501).astype(numpy.uint32)
    arrays = [rng.integers(0, 2**31, 1001).astype(numpy.uint32), rng.random(77),
              numpy.zeros(0, numpy.uint8), times.astype(numpy.uint16)]
    bufs = [pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_WRITE, max(a.nbytes, 1))
            for a in arrays]
    # The first array in two parts at byte offsets, as the event chunks are; the times too.
    items = [(bufs[0], arrays[0][:333], 0), (bufs[0], arrays[0][333:], 333 * 4),
             (bufs[1], arrays[1]), (bufs[2], arrays[2]),
             (bufs[3], times[:123], 0, numpy.uint16), (bufs[3], times[123:], 246, "uint16")]
    seen = []
    opencl.upload_pinned(dev, pyopencl.CommandQueue(dev.context), items,
                         on_item=lambda i, e: seen.append((i, e is None)))
    assert seen == [(0, False), (1, False), (2, False), (3, True), (4, False), (5, False)]
    for buf, a in zip(bufs[:2] + bufs[3:], arrays[:2] + arrays[3:]):
        back = numpy.empty_like(a)
        pyopencl.enqueue_copy(dev.queue, back, buf)
        assert numpy.array_equal(back, a)
    frames = sparse_frames(rng, "uint16", (90, 6, 11))
    q = qmask_of((6, 11))
    q[:, 4:7] = 0  # pixel chunks without binned pixels: no tasks
    ref = correlate(frames, q, method="reference")
    for chunks in (1, 4, 200):
        c = create_correlator(q, method="opencl-events", device=device, upload_chunks=chunks)
        check_equal(c.correlate(compact(frames)), ref, "uint16")


def test_download_through_small_staging_pieces(device, rng, monkeypatch):
    """n2 and the device s2 rows come back through the pinned staging ring in many pieces
    (odd sizes, more pieces than buffers), copied out by several threads: the same sums."""
    import pyopencl

    from ewoksxpcs.opencl import device as opencl

    dev = opencl.get_device(device)
    a = rng.integers(-2**62, 2**62, 1001)
    buf = pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_WRITE | pyopencl.mem_flags.COPY_HOST_PTR,
                          hostbuf=a)
    frames = sparse_frames(rng, "uint16", (120, 6, 11))
    q = qmask_of((6, 11))
    events = compact(frames)
    ref = correlate(frames, q, method="reference")
    monkeypatch.setattr(opencl, "DOWNLOAD_PINNED_BYTES", 0)
    monkeypatch.setattr(opencl, "DOWNLOAD_PIECE_BYTES", 44)  # not a multiple of 8 bytes
    monkeypatch.setattr(opencl, "THREADED_COPY_BYTES", 8)
    back = numpy.zeros_like(a)
    opencl.download_pinned(dev, dev.queue, back, buf)
    assert numpy.array_equal(back, a)
    monkeypatch.setattr(opencl, "LARGE_DOWNLOAD_BYTES", 64)  # whole staging buffers
    back = numpy.zeros_like(a)
    opencl.download_pinned(dev, dev.queue, back, buf)
    assert numpy.array_equal(back, a)
    with pytest.raises(ValueError, match="C-contiguous"):
        opencl.download_pinned(dev, dev.queue, numpy.zeros((4, 4))[:, :2], buf)
    for strategy in ("rows", "local"):
        c = create_correlator(q, method="opencl-events", device=device, strategy=strategy,
                              s2_device=True)
        check_equal(c.correlate(events), ref, "uint16")


def test_pinned_events(device, rng):
    """pin_events: values, times (as uint16: at most 65 536 frames) and offsets in page-locked
    memory (uploaded from where they lie), the same sums as from the plain arrays, whose
    times are sent as uint16 too (converted in the staging copies; by default on GPUs), or as
    uint32 (on request; by default on CPU devices)."""
    from ewoksxpcs.correlators.opencl_events import pin_events
    from ewoksxpcs.opencl.device import is_pinned

    frames = sparse_frames(rng, "uint8", (70, 7, 9))
    q = qmask_of((7, 9))
    events = compact(frames)
    pinned = pin_events(events, device)
    assert is_pinned(pinned.values) and is_pinned(pinned.offsets)
    assert is_pinned(pinned.bus_times) and pinned.bus_times.dtype == numpy.uint16
    assert numpy.array_equal(pinned.bus_times, events.times)
    assert pinned.times is events.times  # the host's uint32 times, shared
    assert pinned == events and pinned.pixel_index is events.pixel_index
    ref = correlate(frames, q, method="reference")
    default = 32 if get_device(device).kind == "cpu" else 16
    for options in ({}, {"strategy": "rows", "upload_chunks": 3}, {"time_bits": 32},
                    {"strategy": "local", "time_bits": 16}, {"strategy": "global"},
                    {"strategy": "rows", "time_bits": 16}):
        c = create_correlator(q, method="opencl-events", device=device, **options)
        check_equal(c.correlate(pinned), ref, "uint8")
        bits = options.get("time_bits", default)
        assert c.last_profile["time_bits"] == bits
        # Page-locked as the device reads them (16-bit times): enqueued at once, no staging.
        assert c.last_profile["upload"] == ("direct" if bits == 16 else "staged")
        check_equal(c.correlate(events), ref, "uint8")  # "rows": the binning's rows kept
        assert c.last_profile["time_bits"] == bits and c.last_profile["upload"] == "staged"


def test_times_of_long_scans_stay_32_bits(device):
    """More than 65 536 frames: the times cross as uint32 (pinned as such by pin_events), and
    time_bits=16 is refused, naming the limit; a bad time_bits is refused at once."""
    from ewoksxpcs.correlators.opencl_events import TIME16_FRAMES, pin_events
    from ewoksxpcs.engine.events import EventStack
    from ewoksxpcs.opencl.device import is_pinned

    n_frames = TIME16_FRAMES + 5
    times = numpy.array([0, 3, TIME16_FRAMES + 1, 2, 65_535, 65_537, TIME16_FRAMES + 4],
                        numpy.uint32)
    values = numpy.array([1, 2, 3, 1, 1, 2, 5], numpy.uint8)
    events = EventStack(values, times, numpy.array([0, 3, 7]), numpy.array([0, 1]), (1, 2),
                        n_frames, numpy.uint8)
    q = numpy.array([[1, 1]])
    ref = correlate(events, q, method="cpu-events")
    pinned = pin_events(events, device)
    assert not hasattr(pinned, "bus_times") and is_pinned(pinned.times)
    for data in (events, pinned):
        c = create_correlator(q, method="opencl-events", device=device)
        r = c.correlate(data)
        assert c.last_profile["time_bits"] == 32
        numpy.testing.assert_array_equal(r.n2, ref.n2)
        with pytest.raises(ValueError, match="time_bits=16 needs at most 65536 frames"):
            create_correlator(q, method="opencl-events", device=device,
                              time_bits=16).correlate(data)
    for bad in (8, True, "16"):
        with pytest.raises(ValueError, match="time_bits must be 16 or 32"):
            create_correlator(q, method="opencl-events", device=device, time_bits=bad)


def test_numba_normalisation_warmed_for_repeated_large_runs(rng, monkeypatch):
    """correlate() loads normalisation's numba kernel (in the background) for large results
    from the correlator's second run on, or at once where numba is already imported."""
    import types

    from ewoksxpcs.correlators import opencl_events as module

    calls = []
    monkeypatch.setattr(module, "warm_numba", lambda: calls.append(1))
    monkeypatch.setattr(module, "sys", types.SimpleNamespace(modules={}))  # numba not imported
    monkeypatch.setattr(module, "NUMBA_JACKKNIFE_SIZE", 10**12)
    events = compact(sparse_frames(rng, "uint8", (20, 4, 5)))
    c = create_correlator(qmask_of((4, 5)), method="opencl-events", device="cpu")
    c.correlate(events)
    c.correlate(events)
    assert calls == []  # small results: never
    monkeypatch.setattr(module, "NUMBA_JACKKNIFE_SIZE", 0)
    c = create_correlator(qmask_of((4, 5)), method="opencl-events", device="cpu")
    c.correlate(events)
    assert calls == []  # first run of a process without numba
    c.correlate(events)
    assert calls == [1]
    monkeypatch.setattr(module, "sys", types.SimpleNamespace(modules={"numba": None}))
    create_correlator(qmask_of((4, 5)), method="opencl-events", device="cpu").correlate(events)
    assert calls == [1, 1]  # numba imported already: from the first run
    # g2 summed on the device (s2 there, double precision, integer events): never.
    c = create_correlator(qmask_of((4, 5)), method="opencl-events", device="cpu", s2_device=True)
    c.correlate(events)
    c.correlate(events)
    assert calls == [1, 1] and c.last_profile["g2_on_device"]


@pytest.mark.parametrize("s2_device", [True, False])
def test_s2_beyond_int64_refused(device, s2_device):
    """Frame sums S with (max S)²·Nt ≥ 2⁶² (n2 fits): s2 refused, whether the device summed it
    (its sums dropped) or the host."""
    frames = numpy.full((8, 4, 4), 2**26, numpy.uint32)
    c = create_correlator(numpy.ones((4, 4), int), method="opencl-events", device=device,
                          s2_device=s2_device)
    with pytest.raises(ValueError, match=r"s2 of q bin 1 can reach .*int64 range"):
        c.correlate(compact(frames))


@pytest.mark.parametrize("s2_device", [True, False])
def test_n2_beyond_int64_refused(device, s2_device):
    """Values whose n2 bound max v·Σ v reaches 2⁶³: refused naming n2 (checked before s2,
    which is then out of range as well), whether s2 was summed on the device or the host."""
    frames = numpy.full((8, 4, 4), 2**31, numpy.uint32)
    c = create_correlator(numpy.ones((4, 4), int), method="opencl-events", device=device,
                          s2_device=s2_device)
    with pytest.raises(ValueError, match=r"^n2 of q bin 1 can reach .*int64 range"):
        c.correlate(compact(frames))


def s2_on_and_off(q, device):
    """Two opencl-events correlators of ``q``: s2 on the device, s2 on the host."""
    return tuple(create_correlator(q, method="opencl-events", device=device, s2_device=on)
                 for on in (True, False))


def test_s2_on_device_many_frames(device, rng):
    """Device s2 over several lag work-groups and frame tiles equals the exact host FFT's."""
    frames = sparse_frames(rng, "uint8", (300, 5, 9), rate=0.5)
    q = qmask_of((5, 9))
    events = compact(frames)
    on, off = s2_on_and_off(q, device)
    r_on, r_off = on.correlate(events), off.correlate(events)
    assert r_on.info["timings"]["s2_s"] is not None
    ref = correlate(frames, q, method="reference")
    check_equal(r_on, ref, "uint8")
    check_equal(r_off, ref, "uint8")
    assert numpy.array_equal(r_on.g2_err, r_off.g2_err, equal_nan=True)


@pytest.mark.parametrize("dtype, shape", [("uint8", (60, 40, 50)), ("uint16", (40, 200, 200))])
def test_s2_on_device_narrow_and_wide(device, rng, dtype, shape):
    """s2 on the device in 32-bit local rows where the largest value times the binned pixels
    stays below 2^31 (uint8 on 2 000 pixels), in 64-bit ones otherwise (uint16 on 40 000):
    both equal the host's exact s2."""
    frames = sparse_frames(rng, dtype, shape, rate=0.05)
    frames[3, 1, 2] = numpy.iinfo(dtype).max  # a large value in a bin's frame sums
    q = qmask_of(shape[1:])
    events = compact(frames)
    on, off = s2_on_and_off(q, device)
    geometry = on._geometry(False, events.values_dtype, shape[0])
    narrow = "S2_NARROW" in on._defines(geometry, events.values_dtype)
    assert narrow == (dtype == "uint8")
    r_on, r_off = on.correlate(events), off.correlate(events)
    assert numpy.array_equal(r_on.g2, r_off.g2, equal_nan=True)
    assert numpy.array_equal(r_on.g2_err, r_off.g2_err, equal_nan=True)


@pytest.mark.parametrize("peak", [100, 10_000, 60_000])
def test_s2_on_device_32bit_runs(device, rng, peak):
    """The device s2 of 32-bit local rows sums runs of frames in 32 bits where the largest
    frame sum X allows (runs of 128 frames for X = 100, of 16 for 10 000) and widens every
    product to 64 bits where it does not (60 000): each equal to the host's exact s2."""
    frames = sparse_frames(rng, "uint16", (300, 4, 5), rate=0.3)
    frames[::7, 0, 0] = peak  # a bin's frame sums reach about the peak
    q = numpy.ones((4, 5), int)
    q[2:, :] = 2
    events = compact(frames)
    on, off = s2_on_and_off(q, device)
    geometry = on._geometry(False, events.values_dtype, 300)
    assert "S2_NARROW" in on._defines(geometry, events.values_dtype)
    r_on, r_off = on.correlate(events), off.correlate(events)
    assert r_on.info["timings"]["s2_s"] is not None
    assert r_on.s2.max() >= peak * peak * 40
    assert on.last_profile.get("g2_on_device") is (True if on.dev.has_fp64 else None)
    for name in ("s2", "g2", "g2_err"):
        assert numpy.array_equal(getattr(r_on, name), getattr(r_off, name), equal_nan=True), name


def test_g2_and_errors_on_device_same_bits(device, rng):
    """With s2 on the device, correlate() takes g2 and its jackknife error there too
    (:mod:`ewoksxpcs.opencl.normalise`): the same result as with the host's normalisation."""
    frames = sparse_frames(rng, "uint16", (400, 6, 11), rate=0.3)
    q = numpy.zeros((6, 11), int)
    q[0, 0], q[1:3, :], q[4:, :] = 1, 2, 4
    on, off = s2_on_and_off(q, device)
    events = compact(frames)
    r_on, r_off = on.correlate(events), off.correlate(events)
    assert on.last_profile.get("g2_on_device") is (True if on.dev.has_fp64 else None)
    assert "g2_on_device" not in off.last_profile
    for name in ("g2", "g2_err", "n2", "s2", "expected_pairs", "frame_sums"):
        assert numpy.array_equal(getattr(r_on, name), getattr(r_off, name), equal_nan=True), name
        assert getattr(r_on, name).dtype == getattr(r_off, name).dtype, name
    check_equal(r_on, correlate(frames, q, method="reference"), "uint16")


def test_sums_carry_the_device_s2(device, rng):
    """compute_sums (the pipeline's Correlate step) takes s2 on the device with n2 and hands it
    on with the sums: normalise uses it for the same binning (identical result to the host's
    s2), not for another binning, and a sum of sums carries none."""
    from ewoksxpcs.engine.normalise import normalise, s2_rows

    frames = sparse_frames(rng, "uint16", (120, 6, 11), rate=0.4)
    q = qmask_of((6, 11))
    events = compact(frames)
    on, off = s2_on_and_off(q, device)
    sums, plain = on.compute_sums(events), off.compute_sums(events)
    assert plain.s2 is None and sums.s2_binning is on.binning
    host = s2_rows(sums.frame_sums, on.binning, sums.lags)
    assert len(sums.s2) == len(host)
    for a, b in zip(sums.s2, host):
        assert (a is None and b is None) or numpy.array_equal(a, b)
    sums.s2 = [None if r is None else r + 1 for r in sums.s2]  # marked: is it used?
    used = normalise(sums, on.binning)
    ref = normalise(plain, on.binning)
    assert not numpy.array_equal(used.s2, ref.s2)
    other = Binning(numpy.where(q > 0, 1, 0))  # another binning: the rows are not its own
    numpy.testing.assert_array_equal(normalise(sums, other).s2, normalise(plain, other).s2)
    assert (sums + plain).s2 is None
    sums.s2 = host
    r = normalise(sums, on.binning)
    numpy.testing.assert_array_equal(r.g2, ref.g2)
    numpy.testing.assert_array_equal(r.g2_err, ref.g2_err)


@pytest.mark.parametrize("dtype", ["uint16", "int32", "float32"])
def test_events_resident_on_the_device(device, rng, dtype):
    """Events compacted on the device stay there: the correlator reads them in place (same
    sums as from host arrays, every split), the host arrays are downloaded on first access,
    and pickles carry host arrays."""
    import pickle

    import pyopencl

    from ewoksxpcs.opencl.compact import compact_opencl

    frames = sparse_frames(rng, dtype, (90, 7, 13))
    host = compact(frames)
    resident = compact_opencl(frames, device=device, chunk_frames=25)
    assert resident.resident is not None and resident._values is None
    # The offsets stay on the device too (the device plan reads them there).
    d_offsets = numpy.empty_like(resident.offsets)
    pyopencl.enqueue_copy(resident.resident.dev.queue, d_offsets, resident.resident.d_offsets)
    assert numpy.array_equal(d_offsets, host.offsets)
    q = qmask_of((7, 13))
    for options in SPLITS:
        c = create_correlator(q, method="opencl-events", device=device, **options)
        a, b = c.correlate(resident), c.correlate(host)
        assert numpy.array_equal(a.n2, b.n2) and numpy.array_equal(a.frame_sums, b.frame_sums)
    assert resident._values is None or dtype == "float32"  # not downloaded for integers
    if dtype != "float32":  # per-pixel sums taken on the device (the mean image)
        numpy.testing.assert_array_equal(
            resident.pixel_sums, frames.reshape(90, -1).sum(axis=0, dtype=numpy.int64))
    copy = pickle.loads(pickle.dumps(resident))
    assert copy.resident is None and copy == host
    assert resident == host  # downloads


@pytest.mark.parametrize("time_bits", [16, 32])
@pytest.mark.parametrize("dtype", ["uint16", "int32", "float32"])
def test_events_beyond_the_memory_budget(device, rng, dtype, time_bits):
    """More events than max_device_memory leaves for them: runs of pixels uploaded into two
    slots in turn (upload of one while the other is correlated); same sums as in one piece
    (float32: same to rounding, the additions of a bin are split between runs)."""
    frames = sparse_frames(rng, dtype, (300, 9, 13), rate=0.8)
    events = compact(frames)
    q = qmask_of((9, 13))
    n_sub = Binning(q).n_sub
    n2_bytes = n_sub * 300 * 8
    ev_bytes = events.values.itemsize + time_bits // 8
    budget = 4 * n2_bytes + 2**20 + 2 * ev_bytes * (events.n_events // 5)  # ~5 runs
    whole = create_correlator(q, method="opencl-events", device=device)
    b = whole.correlate(events)
    ref = correlate(frames, q, method="reference")
    for strategy in ("local", "fold"):
        bounded = create_correlator(q, method="opencl-events", device=device,
                                    max_device_memory=budget, task_pairs=50, strategy=strategy,
                                    time_bits=time_bits)
        a = bounded.correlate(events)
        assert bounded.last_profile["n_chunks"] >= 5
        if dtype == "float32":
            numpy.testing.assert_allclose(a.n2, b.n2, rtol=1e-12)
        else:
            assert numpy.array_equal(a.n2, b.n2)
        assert numpy.array_equal(a.frame_sums, b.frame_sums)
        check_equal(a, ref, dtype)


def test_device_plan_beyond_the_memory_budget_falls_back_to_host_planning(device, rng):
    """Many runs of pixels through a budget too small for the device plan (32 bytes per binned
    pixel and run): planned on the host ("local"), same exact sums."""
    from ewoksxpcs.correlators.opencl_events import PLAN_BYTES

    frames = sparse_frames(rng, "uint16", (60, 40, 50), rate=0.5)
    events = compact(frames)
    q = qmask_of((40, 50))
    n2_bytes = Binning(q).n_sub * 60 * 8
    budget = 4 * n2_bytes + 2**20 + 2 * 4 * (events.n_events // 20)  # ~20 runs (2 + 2 bytes)
    assert PLAN_BYTES * 20 * 2000 > budget // 8
    c = create_correlator(q, method="opencl-events", device=device, strategy="rows",
                          max_device_memory=budget, time_bits=16)
    res = c.correlate(events)
    assert c.last_profile["strategy"] == "local" and c.last_profile["n_chunks"] >= 15
    check_equal(res, correlate(frames, q, method="reference"), "uint16")


def test_pixel_beyond_the_memory_budget_is_a_clear_error(device, rng):
    events = compact(sparse_frames(rng, "uint16", (400, 4, 4), rate=2.0))
    q = qmask_of((4, 4))
    n2_bytes = Binning(q).n_sub * 400 * 8
    c = create_correlator(q, method="opencl-events", device=device,
                          max_device_memory=4 * n2_bytes + 2**20 + 100)
    with pytest.raises(ValueError, match="raise max_device_memory"):
        c.correlate(events)


@pytest.mark.parametrize("progress", [False, True])
@pytest.mark.parametrize("n_c, most, groups, tiles", [(4306, 65536, 1, 1), (4306, 65536, 8, 1),
                                                      (70000, 65536, 1, 1), (50, 50, 4, 3),
                                                      (1, 8, 1, 1), (0, 8, 1, 1)])
def test_launches_cover_the_tasks_and_fill_the_device(progress, n_c, most, groups, tiles):
    """Launches over a chunk's tasks: contiguous, of equal sizes, at most ``most`` each; with
    the progress bar on, about PROGRESS_STEPS of them but none below LAUNCH_FILL work-groups
    per compute unit (a launch of fewer leaves the device partly idle)."""
    from types import SimpleNamespace

    from ewoksxpcs.correlators import opencl_events as oe

    corr = SimpleNamespace(dev=SimpleNamespace(compute_units=132),
                           report_progress=(lambda f: None) if progress else None)
    ranges = oe.OpenCLEventCorrelator._task_ranges(corr, n_c, most, groups, tiles)
    starts = [k for k, _ in ranges]
    assert starts == sorted(starts) and sum(n for _, n in ranges) == n_c
    assert all(k0 + n0 == k1 for (k0, n0), (k1, _) in zip(ranges, ranges[1:]))
    sizes = [n for _, n in ranges]
    assert all(0 < n <= most for n in sizes)
    if len(sizes) > 1:
        assert max(sizes) - min(sizes) <= max(sizes) // len(sizes) + 1
    fill = -(-oe.LAUNCH_FILL * 132 // tiles)
    if progress and n_c >= fill:
        assert min(sizes) * tiles >= oe.LAUNCH_FILL * 132 * 0.5  # equal sizes: at least half
        assert max(sizes) * tiles >= oe.LAUNCH_FILL * 132
    if not progress:
        assert len(sizes) == -(-n_c // most)


def test_binning_tables_serve_every_correlator_of_the_binning(device, rng):
    """The device plan's rows and the s2/g2 tables are uploaded once per binning and device:
    a new correlator of the same Binning (as correlate() makes per call) finds them, another
    binning gets its own; the sums stay exact."""
    from ewoksxpcs import Binning
    from ewoksxpcs.correlators.opencl_events import binning_tables

    frames = sparse_frames(rng, "uint8", (90, 8, 10), rate=0.3)
    b = Binning(qmask_of((8, 10)))
    ref = correlate(frames, b, method="reference")
    events = compact(frames)
    dev = get_device(device)
    options = dict(strategy="rows", s2_device=True)
    check_equal(create_correlator(b, method="opencl-events", device=device, **options)
                .correlate(events), ref, "uint8")
    tables = binning_tables(b, dev)
    first = dict(tables)
    assert {"rows", "s2"} <= set(first)
    check_equal(create_correlator(b, method="opencl-events", device=device, **options)
                .correlate(events), ref, "uint8")
    assert all(tables[k] is first[k] for k in first)  # reused, not uploaded again
    other = Binning(qmask_of((8, 10)))
    assert binning_tables(other, dev) is not tables and not binning_tables(other, dev)


def test_failed_run_finishes_its_queues(device, rng, monkeypatch):
    """A run that fails after its kernels are enqueued finishes the device's queues before its
    pooled buffers go back to the pool (else a later run could be handed a buffer that work of
    the failed one still writes); the next run then equals the reference."""
    from ewoksxpcs.correlators.opencl_events import OpenCLEventCorrelator

    frames = sparse_frames(rng, "uint8", (60, 7, 13))
    q = qmask_of((7, 13))
    ref = correlate(frames, q, method="reference")
    events = compact(frames)
    c = create_correlator(q, method="opencl-events", device=device)
    finished = []

    class Recording:  # the read queue: unused by the failing run
        def finish(self):
            finished.append("reads")

    def fail(self, *args, **kwargs):
        raise RuntimeError("failed after the kernels were enqueued")

    with monkeypatch.context() as m:
        m.setattr(OpenCLEventCorrelator, "_finish", fail)
        m.setattr(OpenCLEventCorrelator, "_read_queue", lambda self: Recording())
        with pytest.raises(RuntimeError, match="failed after the kernels"):
            c.correlate(events)
    assert finished == ["reads"]
    check_equal(c.correlate(events), ref, "uint8")
