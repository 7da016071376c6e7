"""``ewoksxpcs benchmark --suite overhead`` on a small Eiger-like scan: every stage is stamped
(new process, kernel caches off, persistent worker), nothing heavy is imported before the first
frame read, the PNG is drawn by the helper process (a record, not a timing)."""

import pytest

from conftest import require_opencl
from ewoksxpcs.tools.benchmark_overhead import ring_labels, run_overhead, table


def test_ring_labels():
    import numpy

    gaps = numpy.zeros((40, 50), bool)
    gaps[:, 20:22] = True
    labels = ring_labels((40, 50), 16, gaps)
    assert labels.dtype == numpy.int32 and labels.max() == 16 and labels.min() == 0
    assert not labels[gaps].any() and labels[20, 25] == 1


@pytest.fixture(scope="module")
def overhead(tmp_path_factory):
    require_opencl("cpu")
    lines = []
    out = run_overhead(workdir=str(tmp_path_factory.mktemp("overhead")), n_frames=32,
                       shape=(64, 72), run_options=["--method", "opencl-events", "--device",
                                                     "cpu"], repeat=1, processes=1,
                       on_step=lines.append)
    return out, lines


def test_every_stage_is_stamped(overhead):
    out, lines = overhead
    assert out["version_s"] > 0 and out["cli_import_s"] > 0
    assert set(out["imports"]) >= {"ewokscore", "scipy.optimize", "matplotlib.figure"}
    assert all(v > 0 for v in out["imports"].values())
    kinds = out["runs"]
    assert list(kinds) == ["new process", "kernel caches off", "persistent worker (2nd run)"]
    for name, stages in kinds.items():
        for task in ("LoadFrames", "BuildQMask", "Correlate", "Normalise", "SaveResults"):
            assert stages[f"task {task}"] >= 0, (name, task)
        assert 0 < stages["to first frame read"] < stages["total"], name
        assert stages["png drawn in"] == "process" and stages["png wait after the result is "
                                                              "written"] >= 0
        # The binning is stamped (>= 0: BuildQMask's Binning is reused, a lookup of
        # microseconds that a coarse clock may show as 0).
        assert stages["binning"] >= 0 and stages["write nexus"] > 0 and stages["fit"] > 0
    new = kinds["new process"]
    assert new["python start-up"] > 0 and new["ewokscore import"] > 0
    assert new["opencl programs"] >= 0
    assert "python start-up" not in kinds["persistent worker (2nd run)"]
    text = table(out)
    assert lines[-1] == text
    assert "heavy modules imported at the first frame read: none" in text
    assert "persistent worker (2nd run)" in text and "to first frame read" in text
