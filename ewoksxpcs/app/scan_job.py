"""One scan = one workflow run: its parameters, the Ewoks inputs they become, and their record.

Shared by :mod:`ewoksxpcs.app.submit` (one scan to a job queue) and :mod:`ewoksxpcs.app.reprocess`
(many scans). A scan's *parameters* are a flat mapping of task input names to values (e.g.
``{"url": "scan.h5::/3.1", "qmask": "labels.h5::/q", "method": "auto"}``) plus two
convenience keys:

- ``input``: the frames (file, URL), given to the loading task;
- ``output``: the result file, given to the saving task.

Each name goes to the nodes of the workflow whose task declares an input of that name and does
not receive it through a link from an upstream task; a name no task knows is an error (a typo must not be silently ignored). The *fingerprint* of a scan is
a SHA-256 over the workflow, the parameters (not the output name; paths normalised) and the
identity of every input file (size, mtime, content hash or inode): a result whose recorded
fingerprint equals the one asked for was made from identical inputs and need not be redone.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

__all__ = [
    "INPUT_KEY",
    "OUTPUT_KEY",
    "ScanJob",
    "load_workflow",
    "task_input_names",
    "workflow_inputs",
    "fingerprint",
    "record_path",
    "read_record",
    "write_record",
    "is_up_to_date",
    "parse_value",
    "unique_node_ids",
]

#: Convenience parameter names and the task input they map to (the loading/saving tasks).
INPUT_KEY = "input"
OUTPUT_KEY = "output"
#: Task input names that receive ``input`` and ``output`` (first one a task declares wins).
INPUT_TARGETS = ("url", "source", "filename", "input")
OUTPUT_TARGETS = ("output", "output_filename", "filename")
#: Loader and saver task classes (``input``/``output`` go to those only, never to others).
LOADER_SUFFIXES = (".LoadFrames", ".LoadEvents", ".LoadPixelSeries")
SAVER_SUFFIXES = (".SaveResults",)
#: Tasks whose ``overwrite`` flag follows the run's: the savers and the events file writer.
OVERWRITE_SUFFIXES = SAVER_SUFFIXES + (".CompactEvents",)
#: Overwrite flag of the saving task, set when a result is redone.
OVERWRITE_NAME = "overwrite"

DEFAULT_WORKFLOW = "xpcs"


@dataclass
class ScanJob:
    """One scan to process.

    Attributes
    ----------
    name : str
        Display name (the input URL by default).
    parameters : dict
        Workflow parameters: task input names, plus ``input`` and ``output``.
    """

    name: str
    parameters: Dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> str:
        return str(self.parameters[OUTPUT_KEY])

    @property
    def input(self) -> str:
        return str(self.parameters[INPUT_KEY])


# ---------------------------------------------------------------------------- workflow
def _workflow_dirs() -> List[Path]:
    dirs = []
    try:
        from importlib.resources import files

        dirs.append(Path(str(files("ewoksxpcs.workflows"))))
    except Exception:  # not installed as a package (source tree)
        pass
    dirs.append(Path(__file__).resolve().parent.parent / "workflows")
    return dirs


def load_workflow(workflow: Union[str, os.PathLike, dict, None] = None) -> dict:
    """Return a workflow as an Ewoks graph dict.

    Parameters
    ----------
    workflow : str, path or dict, optional
        A shipped workflow name (``"xpcs"``, ``"xpcs_events"``), a JSON file or a graph dict.
        Default: ``"xpcs"``.
    """
    if workflow is None:
        workflow = DEFAULT_WORKFLOW
    if isinstance(workflow, dict):
        return workflow
    path = Path(workflow)
    if not path.suffix and not path.exists():
        for d in _workflow_dirs():
            candidate = d / f"{workflow}.json"
            if candidate.exists():
                path = candidate
                break
        else:
            raise ValueError(f"unknown workflow {str(workflow)!r}: not a file nor a shipped workflow name")
    if not path.exists():
        raise ValueError(f"workflow file {str(path)!r} does not exist")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"workflow file {str(path)!r} is not valid JSON: {e}") from None


def task_input_names(graph: dict) -> Dict[str, tuple]:
    """Map node id → (task identifier, input names of its task class, names fed by links)."""
    from ewokscore import load_graph
    from ewokscore.inittask import get_task_class

    taskgraph = load_graph(graph)
    nodes = {}
    for node_id, attrs in taskgraph.graph.nodes.items():
        cls = get_task_class(node_id, attrs)
        linked = set()
        for source in taskgraph.graph.predecessors(node_id):
            link = taskgraph.graph.edges[source, node_id]
            linked.update(m["target_input"] for m in link.get("data_mapping", []))
        nodes[node_id] = (attrs.get("task_identifier", ""), set(cls.input_names()), linked)
    return nodes


def _target(node_inputs, suffixes, names):
    hits = []
    for node_id, (identifier, inputs, _) in node_inputs.items():
        if identifier.endswith(suffixes):
            for name in names:
                if name in inputs:
                    hits.append((node_id, name))
                    break
    return hits


def workflow_inputs(graph: dict, parameters: Dict[str, Any], overwrite: bool = False) -> List[dict]:
    """Turn scan parameters into Ewoks ``inputs`` (a list of ``{"id", "name", "value"}``).

    Raises
    ------
    ValueError
        A parameter no task of the workflow takes; ``input``/``output`` without a loading or
        saving task.
    """
    node_inputs = task_input_names(graph)
    inputs = []
    for key, value in parameters.items():
        if value is None:
            continue
        if key == INPUT_KEY:
            hits = _target(node_inputs, LOADER_SUFFIXES, INPUT_TARGETS)
        elif key == OUTPUT_KEY:
            hits = _target(node_inputs, SAVER_SUFFIXES, OUTPUT_TARGETS)
        else:
            # The nodes that take it and do not get it from an upstream task (e.g. ``method``
            # goes to Correlate, not to Normalise which receives the method used); if every
            # taker is fed by a link, all of them.
            takers = [(node_id, linked) for node_id, (_, names, linked) in node_inputs.items() if key in names]
            free = [node_id for node_id, linked in takers if key not in linked]
            hits = [(node_id, key) for node_id in (free or [n for n, _ in takers])]
        if not hits:
            known = sorted(set().union(*(names for _, names, _ in node_inputs.values())) | {OUTPUT_KEY})
            raise ValueError(
                f"parameter {key!r} is not an input of any task of the workflow; known: "
                f"{', '.join([INPUT_KEY] + [k for k in known if k != INPUT_KEY])}"
            )
        inputs.extend({"id": node_id, "name": name, "value": value} for node_id, name in hits)
    if overwrite:
        inputs.extend(
            {"id": node_id, "name": name, "value": True}
            for node_id, name in _target(node_inputs, OVERWRITE_SUFFIXES, (OVERWRITE_NAME,))
        )
    return inputs


# ---------------------------------------------------------------------------- records
def _canonical(value):
    """JSON-able canonical form (tuples → lists, paths → str, numpy scalars → Python)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _canonical(value.tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"scan parameter value {value!r} of type {type(value).__name__} is not JSON-able")


def _normalised(parameters: Dict[str, Any]) -> Dict[str, Any]:
    """Parameters with the file part of every path made absolute and real."""
    from ..io.inputfiles import PATH_PARAMETERS, normalise_path

    return {k: normalise_path(v) if k in PATH_PARAMETERS else v for k, v in parameters.items()}


def fingerprint(graph: dict, parameters: Dict[str, Any]) -> str:
    """SHA-256 (hex) of the workflow, the parameters and the content of the input files.

    The output name is excluded; paths are normalised (relative and absolute spellings of a
    file give one fingerprint); every file the run reads (:func:`ewoksxpcs.io.inputfiles.input_files`:
    scan file and the data files it links to, q-mask, masks, PONI) enters by its
    :func:`~ewoksxpcs.io.inputfiles.file_identity` (size, mtime; content hash of small files,
    inode of large ones), so a file changed under the same name changes the fingerprint.
    """
    from ..io.inputfiles import file_identity, input_files

    params = {k: v for k, v in parameters.items() if k != OUTPUT_KEY and v is not None}
    files = [file_identity(name) for name in input_files(params)]
    text = json.dumps(
        {"workflow": _canonical(graph), "parameters": _canonical(_normalised(params)),
         "files": files},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


def unique_node_ids(graph: dict, inputs: List[dict], tag: str):
    """The graph and inputs with every node id prefixed by ``tag``.

    ewoksdask names the dask task of a node by its bare node id: two workflows running at once
    on one scheduler would share task keys and exchange results (one scan's g2 saved under
    another's name). A tag unique per run (e.g. a UUID) keeps their keys apart.
    """
    def rename(node_id):
        return f"{tag}:{node_id}"

    graph = copy.deepcopy(graph)
    for node in graph.get("nodes", []):
        node["id"] = rename(node["id"])
    for link in graph.get("links", []):
        link["source"] = rename(link["source"])
        link["target"] = rename(link["target"])
    for key in ("input_nodes", "output_nodes"):
        for entry in graph.get("graph", {}).get(key, []) or []:
            if "node" in entry:
                entry["node"] = rename(entry["node"])
    inputs = [{**item, "id": rename(item["id"])} if "id" in item else dict(item)
              for item in inputs]
    return graph, inputs


def record_path(output: Union[str, os.PathLike]) -> Path:
    """The record written next to a result: ``<output>.params.json``."""
    return Path(f"{os.fspath(output)}.params.json")


def read_record(output) -> Optional[dict]:
    """The record of ``output``, or None if there is none or it is unreadable."""
    try:
        with open(record_path(output)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_record(output, graph: dict, parameters: Dict[str, Any],
                 fingerprint_: Optional[str] = None, **extra) -> Path:
    """Record the parameters a result was made with (atomically: temporary file, rename).

    ``fingerprint_``: the fingerprint taken when the run was decided (before it ran; default:
    computed now).
    """
    from .. import __version__

    path = record_path(output)
    record = {
        "fingerprint": fingerprint_ or fingerprint(graph, parameters),
        "parameters": _canonical({k: v for k, v in parameters.items() if v is not None}),
        "ewoksxpcs_version": __version__,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **extra,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)
    return path


def is_up_to_date(graph: dict, parameters: Dict[str, Any],
                  fingerprint_: Optional[str] = None) -> bool:
    """True when the result exists and its record has the same fingerprint (``fingerprint_``,
    default: computed now)."""
    output = parameters.get(OUTPUT_KEY)
    if not output or not os.path.exists(output):
        return False
    record = read_record(output)
    return bool(record) and record.get("fingerprint") == (
        fingerprint_ or fingerprint(graph, parameters))


# ---------------------------------------------------------------------------- NAME=VALUE parameters
def parse_value(text: str):
    """A parameter value from text: JSON (numbers, true/false, null, lists) or else the string."""
    text = text.strip()
    if text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _key_value(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), parse_value(value)
