"""``ewoksxpcs.tools.bench_bslz4_kernels``: every variant decodes a small Eiger scan on PoCL; the
complete ones equal h5py, the ones with a step switched off do not."""

import json

from ewoksxpcs.tools import bench_bslz4_kernels as bench

from conftest import require_opencl


def test_variants_on_a_small_scan(tmp_path):
    require_opencl("cpu")
    out = tmp_path / "bslz4.json"
    assert bench.main(["--device", "cpu", "--frames", "4", "--shape", "96", "80", "--counts",
                       "0.5", "--batch", "3", "--workdir", str(tmp_path), "--out",
                       str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    assert len(records) == len(bench.VARIANTS)
    for rec in records:
        complete = rec["switched_off"] is None
        assert rec["equal_h5py"] is complete and rec["equal_first_variant"] is complete, rec
        assert rec["frames"] == 4 and rec["wall_s_per_10k"] > 0
        names = set(rec["kernel_s_per_10k"])
        if rec["kernels"] == "local":  # no zero fill of the output
            assert names == {"bslz4_blocks", "bslz4_decode_local"}
        else:
            assert {"bslz4_blocks", "bslz4_decode", "bslz4_unshuffle"} <= names
