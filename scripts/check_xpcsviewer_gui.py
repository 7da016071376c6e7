"""Open APS-layout results with the loader of ``xpcsviewer-gui`` (the xpcs-viewer fork).

``xpcsviewer-gui`` 0.1.10 needs Python >= 3.12 and NumPy >= 2.3 (and lists JAX, JupyterLab,
Sphinx... as dependencies), so it cannot join the test environment. Its loader runs with a few
packages; in a Python 3.12 venv::

    pip install --no-deps xpcsviewer-gui==0.1.10
    pip install numpy h5py hdf5plugin pyqtgraph scipy psutil qtpy tqdm pyside6
    QT_QPA_PLATFORM=offscreen python scripts/check_xpcsviewer_gui.py result_results.hdf ...

For each file: the analysis type the fork detects, its g2 (n_τ, n_q) against the stored
``normalized_g2``, its delays, q list and bin labels, and each two-time map against the stored
upper triangle mirrored. Exits 1 on a mismatch.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def check(filename: str) -> bool:
    import h5py
    import numpy as np
    from xpcsviewer.xpcs_file import XpcsFile

    xf = XpcsFile(filename)
    ok = True
    print(f"{filename}: {xf.atype}")
    with h5py.File(filename, "r") as f:
        if "Multitau" in xf.atype:
            ref = f["xpcs/multitau/normalized_g2"][()]
            same = np.array_equal(xf.g2, ref)
            q, t_el, _, _, labels = xf.get_g2_data()
            print(f"  g2 {xf.g2.shape} equal: {same}; t_el[:3] {t_el[:3]}; q[:3] "
                  f"{np.asarray(q)[:3]}; {labels[0]!r}")
            ok &= same
        if "Twotime" in xf.atype:
            names = sorted(f["xpcs/twotime/correlation_map"])
            for sel, name in enumerate(names):
                half = f[f"xpcs/twotime/correlation_map/{name}"][()]
                full = half + half.T - np.diag(np.diag(half))
                c2 = xf.get_twotime_c2(selection=sel, correct_diag=False)["c2_mat"]
                same = np.allclose(c2, full, equal_nan=True)
                print(f"  {name} {c2.shape} equal: {same}")
                ok &= same
    return bool(ok)


if __name__ == "__main__":
    results = [check(name) for name in sys.argv[1:]]
    sys.exit(0 if results and all(results) else 1)
