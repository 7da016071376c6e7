"""The files a run reads: which they are, whether an output would replace one, what they hold.

Two guarantees rest on this list:

- an output (result, PNG, events file) is never one of the files a run reads — the scan file,
  the data files it reaches through external links, virtual-dataset sources and external
  storage, the q-mask, the q values, the masks and the PONI file — even with ``overwrite``
  (:func:`check_not_input`, comparing real paths and, for existing files, inodes);
- a recorded result is up to date only while none of these files changed
  (:func:`file_identity`: size, modification time and inode; plus a SHA-256 of the content of
  small files such as q-masks, whose content may change within the clock's resolution).

Parameters are the flat task inputs of a workflow (``url``, ``qmask``, ``mask`` ...) or the
nested ``parameters`` record the tasks pass on; values are paths, ``file::/path`` URLs, glob
patterns or lists of them; anything else (arrays, numbers) is not a file and is ignored.
"""

from __future__ import annotations

import glob
import hashlib
import os
from typing import Dict, Iterable, List, Optional

__all__ = [
    "INPUT_PARAMETERS",
    "PATH_PARAMETERS",
    "split_url",
    "normalise_path",
    "data_files",
    "input_files",
    "check_not_input",
    "file_identity",
]

#: Parameters that name files a run reads (``source`` is the loader's record of ``url``).
INPUT_PARAMETERS = ("input", "url", "source", "qmask", "q_values", "poni", "mask")
#: Parameters that name files, read or written (normalised in fingerprints).
PATH_PARAMETERS = INPUT_PARAMETERS + ("output", "events_file", "plot")
#: Files up to this size are identified by a hash of their content too (q-masks, PONI files).
SMALL_FILE_BYTES = 64 * 1024**2
#: External links and virtual sources are followed this many files deep.
MAX_LINK_DEPTH = 4


def split_url(value: str):
    """``file.h5::/path`` → (``file.h5``, ``/path``); a plain name → (name, None)."""
    filename, sep, path = str(value).partition("::")
    if not sep and "?" in filename and filename.startswith("silx:"):  # silx DataUrl syntax
        from silx.io.url import DataUrl

        url = DataUrl(value)
        return url.file_path(), url.data_path()
    if filename.startswith("file://"):
        filename = filename[len("file://"):]
    return filename, (path.split("?")[0] or None) if sep else None


def normalise_path(value):
    """A path or URL with its file part made absolute and real (symbolic links resolved).

    Non-strings (and lists of non-strings) are returned unchanged; ``a.h5::/1.1`` and
    ``/abs/dir/a.h5::/1.1`` give the same string.
    """
    if isinstance(value, (list, tuple)):
        return [normalise_path(v) for v in value]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        return value
    filename, path = split_url(value)
    filename = os.path.realpath(filename)
    return filename + (f"::{path}" if path else "")


#: _hdf5_links results by (file identity, path): the CLI, the workflow's tasks and a
#: persistent worker ask for the same scan files several times per run.
_LINKS_CACHE: Dict[tuple, List[str]] = {}


def _hdf5_links(filename: str, path: Optional[str]) -> List[str]:
    """Files the HDF5 object ``path`` (default: the root) of ``filename`` refers to (cached
    while the file's inode, size and modification time stay the same)."""
    try:
        st = os.stat(filename)
        key = (os.path.realpath(filename), path, st.st_ino, st.st_dev, st.st_size,
               st.st_mtime_ns)
    except OSError:
        return _read_hdf5_links(filename, path)
    if key not in _LINKS_CACHE:
        if len(_LINKS_CACHE) > 1024:
            _LINKS_CACHE.clear()
        _LINKS_CACHE[key] = _read_hdf5_links(filename, path)
    return list(_LINKS_CACHE[key])


def _read_hdf5_links(filename: str, path: Optional[str]) -> List[str]:
    import h5py

    found: List[str] = []
    base = os.path.dirname(os.path.abspath(filename))

    def resolve(name: str) -> Optional[str]:
        if name in (".", "") or "%" in name:  # same file, or a printf pattern of Bliss
            return None
        return name if os.path.isabs(name) else os.path.join(base, name)

    def dataset(d) -> None:
        if d.is_virtual:
            for source in d.virtual_sources():
                found.append(resolve(source.file_name))
        for entry in d.external or ():
            found.append(resolve(os.fsdecode(entry[0])))

    def group(g, depth: int) -> None:
        for name in g:
            link = g.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                found.append(resolve(link.filename))
                continue
            if isinstance(link, h5py.SoftLink):
                continue
            obj = g.get(name)
            if isinstance(obj, h5py.Dataset):
                dataset(obj)
            elif isinstance(obj, h5py.Group) and depth < 8:
                group(obj, depth + 1)

    try:
        with h5py.File(filename, "r") as f:
            obj = f.get(path or "/", getlink=True) if path else f
            if isinstance(obj, h5py.ExternalLink):
                found.append(resolve(obj.filename))
            else:
                obj = f.get(path) if path else f
                if isinstance(obj, h5py.Dataset):
                    dataset(obj)
                elif isinstance(obj, h5py.Group):
                    group(obj, 0)
    except (OSError, KeyError, ValueError):  # not HDF5, or unreadable: the loader says why
        pass
    return [name for name in found if name]


def data_files(value, depth: int = 0) -> List[str]:
    """The files behind one parameter value: the file itself (glob expanded) and, for HDF5,
    the files its external links, virtual datasets and external storage refer to."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        return []
    filename, path = split_url(value)
    names = sorted(glob.glob(filename)) if glob.has_magic(filename) else [filename]
    files: List[str] = []
    for name in names:
        files.append(os.path.abspath(name))
        if depth < MAX_LINK_DEPTH and os.path.isfile(name) and _is_hdf5(name):
            for linked in _hdf5_links(name, path):
                files.extend(data_files(linked, depth + 1))
    return list(dict.fromkeys(files))


def _is_hdf5(filename: str) -> bool:
    try:
        with open(filename, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _walk(parameters, keys) -> Iterable:
    """Values of ``keys`` in a flat or nested parameter mapping (lists flattened)."""
    if not isinstance(parameters, dict):
        return
    for key, value in parameters.items():
        if isinstance(value, dict):
            yield from _walk(value, keys)
        elif key in keys:
            if isinstance(value, (list, tuple)):
                yield from (v for v in value if isinstance(v, (str, os.PathLike)))
            elif isinstance(value, (str, os.PathLike)):
                yield value


def input_files(parameters: Dict) -> List[str]:
    """Absolute names of every file a run with these parameters reads (see module doc)."""
    files: List[str] = []
    for value in _walk(parameters, INPUT_PARAMETERS):
        files.extend(data_files(value))
    return list(dict.fromkeys(files))


def _same(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def check_not_input(output, inputs: Iterable[str], what: str = "output") -> None:
    """Refuse an output that is one of the ``inputs`` (even with overwrite).

    Raises
    ------
    ValueError
        Naming the output and the input it would replace.
    """
    if output is None:
        return
    output = os.path.abspath(os.fspath(output))
    for name in inputs:
        if _same(output, name):
            raise ValueError(
                f"{what} {output!r} is an input of this run ({name!r}): refusing to replace it"
            )


def file_identity(filename: str, small: int = SMALL_FILE_BYTES) -> Dict:
    """What identifies a file's content: real path, size, mtime (ns); SHA-256 of a small file,
    inode of a large one (raw data is not read again to be hashed).

    A missing file gives ``{"path": ..., "missing": True}``.
    """
    path = os.path.realpath(filename)
    try:
        st = os.stat(path)
    except OSError:
        return {"path": path, "missing": True}
    ident = {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if st.st_size > small:  # raw data: a rewrite gets a new inode or mtime
        ident["inode"] = st.st_ino
    else:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        ident["sha256"] = h.hexdigest()
    return ident
