"""Facility-wide reprocessing: one workflow per scan, on a process pool, ewoksjob or dask.

Scans come from glob patterns or URLs (``/data/*/scan*.h5``, ``run.h5::/3.1``) sharing one set of
parameters, or from a YAML or CSV file giving per-scan parameters::

    # scans.yml                                  # scans.csv
    defaults: {qmask: labels.h5::/q, method: auto}   input,output,method
    scans:                                       a.h5::/1.1,out/a1.h5,fft
      - input: a.h5::/1.1                        a.h5::/2.1,out/a2.h5,
        output: out/a1.h5
        method: fft

Parameter names are task input names of the workflow (see :mod:`ewoksxpcs.app.scan_job`), plus
``input`` (the frames) and ``output`` (the result file; default ``<output_dir>/<name>.h5``).
A ``formats`` column picks the result layouts (``nexus``, ``aps``, ``id02``; several separated
by spaces, or a YAML list), written next to ``output`` (:mod:`ewoksxpcs.io.formats`).

Resumable: a result is skipped when it exists with a record (``<output>.params.json``) of the
same parameters, workflow and input files (their size and mtime, a content hash of small
files such as q-masks, the inode of raw data; paths normalised); redone (overwritten) when
one changed; a failed or interrupted
scan leaves no result (the saving task writes a temporary file renamed at the end) and no
record, so the next run does it again. The run ends with a summary table; the exit code is 0
when every scan is done or skipped, 1 when one failed, 2 on bad input.

Executors: ``local`` (a pool of processes on this machine), ``dask`` (a dask.distributed
cluster: ``scheduler`` address, or a LocalCluster started for the run; each workflow runs whole
on one worker), ``ewoksjob`` (Celery workers of an ewoksjob queue). ``engine`` picks the Ewoks
engine each workflow runs with (default: sequential); with ``executor="dask"``,
``engine="dask"`` runs the workflows through ewoksdask, which schedules each task of each
workflow on the cluster.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import socket
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..io.inputfiles import check_not_input, input_files
from .errors import reason
from .scan_job import (
    INPUT_KEY,
    OUTPUT_KEY,
    ScanJob,
    _key_value,
    fingerprint,
    is_up_to_date,
    load_workflow,
    parse_value,
    read_record,
    unique_node_ids,
    workflow_inputs,
    write_record,
)

__all__ = ["read_scans", "reprocess", "run_scan", "ReprocessReport", "ScanOutcome", "main"]

EXECUTORS = ("local", "dask", "ewoksjob")


# ---------------------------------------------------------------------------- scan lists
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "scan"


def default_output(input_url: str, output_dir) -> str:
    """``<output_dir>/<file stem>[_<path in file>].h5`` for an input URL ``file::/path``."""
    filename, _, path = str(input_url).partition("::")
    stem = Path(filename).name
    for ext in (".h5", ".hdf5", ".nxs", ".hdf"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    name = _slug(stem + ("_" + path.strip("/") if path.strip("/") else ""))
    return os.path.join(os.fspath(output_dir), name + ".h5")


def _expand(pattern: str) -> List[str]:
    """Expand the file part of ``pattern`` (``file-glob[::/path]``) into sorted URLs."""
    filename, sep, path = pattern.partition("::")
    if glob.has_magic(filename):
        files = sorted(glob.glob(filename))
        if not files:
            raise ValueError(f"no file matches {filename!r}")
    else:
        if not os.path.exists(filename):
            raise ValueError(f"scan file {filename!r} does not exist")
        files = [filename]
    return [f + sep + path for f in files]


def _rows_from_yaml(filename: str):
    import yaml

    with open(filename) as f:
        try:
            doc = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{filename}: invalid YAML: {e}") from None
    defaults = {}
    if isinstance(doc, dict):
        defaults = doc.get("defaults") or {}
        rows = doc.get("scans")
        if not isinstance(defaults, dict):
            raise ValueError(f"{filename}: 'defaults' must be a mapping")
    else:
        rows = doc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{filename}: expected a list of scans (mappings), or a mapping with 'scans'")
    return defaults, rows


def _rows_from_csv(filename: str):
    with open(filename, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or INPUT_KEY not in reader.fieldnames:
            raise ValueError(f"{filename}: the CSV header must have an {INPUT_KEY!r} column")
        rows = [{k.strip(): parse_value(v or "") for k, v in row.items() if k} for row in reader]
    return {}, rows


def read_scans(sources: Sequence[str], parameters: Optional[Dict[str, Any]] = None,
               output_dir=None) -> List[ScanJob]:
    """Build the list of scans from globs/URLs and YAML/CSV scan lists.

    Parameters
    ----------
    sources : sequence of str
        Each a glob or URL (``file-glob[::/path]``), or a ``.yml``/``.yaml``/``.csv`` scan list.
    parameters : dict, optional
        Parameters of every scan (a scan list's ``defaults`` and rows override them).
    output_dir : path, optional
        Where results go when a scan gives no ``output``.

    Raises
    ------
    ValueError
        No scan, a scan without ``input``, a missing output directory, duplicate outputs.
    """
    if isinstance(sources, str):
        sources = [sources]
    common = dict(parameters or {})
    jobs: List[ScanJob] = []
    for source in sources:
        lower = source.lower()
        if lower.endswith((".yml", ".yaml", ".csv")):
            if not os.path.exists(source):
                raise ValueError(f"scan list {source!r} does not exist")
            defaults, rows = (_rows_from_csv if lower.endswith(".csv") else _rows_from_yaml)(source)
            for i, row in enumerate(rows):
                params = {**common, **defaults, **{k: v for k, v in row.items() if v is not None}}
                if not params.get(INPUT_KEY):
                    raise ValueError(f"{source}: scan {i + 1} has no {INPUT_KEY!r}")
                jobs.append(ScanJob(name=str(params.pop("name", params[INPUT_KEY])), parameters=params))
        else:
            for url in _expand(source):
                jobs.append(ScanJob(name=url, parameters={**common, INPUT_KEY: url}))
    if not jobs:
        raise ValueError("no scan to process")
    for job in jobs:
        if not job.parameters.get(OUTPUT_KEY):
            if output_dir is None:
                raise ValueError(
                    f"scan {job.name!r} has no output: give an output directory (--output-dir) "
                    f"or an {OUTPUT_KEY!r} per scan"
                )
            job.parameters[OUTPUT_KEY] = default_output(job.input, output_dir)
    outputs: Dict[str, str] = {}
    for job in jobs:
        key = os.path.abspath(job.output)
        if key in outputs:
            raise ValueError(f"scans {outputs[key]!r} and {job.name!r} have the same output {job.output!r}")
        outputs[key] = job.name
    return jobs


# ---------------------------------------------------------------------------- one scan
def run_scan(graph: dict, inputs: List[dict], output: str, engine: Optional[str] = None,
             engine_options: Optional[dict] = None) -> dict:
    """Run one workflow where this is called (a pool or dask worker); raise if it fails.

    ``engine`` and ``engine_options`` go to ``ewoks.execute_graph`` (e.g. ``"dask"`` with
    ``{"scheduler": "tcp://..."}``: ewoksdask spreads the workflow's tasks over that cluster).

    Returns
    -------
    dict
        ``seconds``, ``host``, ``pid``.
    """
    from ewoks import execute_graph

    t0 = time.perf_counter()
    before = file_state(output)
    options = dict(engine_options or {})
    if engine is not None:
        options["engine"] = engine
    if engine == "dask":  # dask task keys unique to this run (ewoksdask uses node ids)
        graph, inputs = unique_node_ids(graph, inputs, uuid.uuid4().hex)
    # No outputs back: end-node values (frame sources, results) need not cross processes.
    execute_graph(graph, inputs=inputs, outputs=[], **options)
    check_written(output, before)
    return {"seconds": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid()}


def file_state(filename) -> Optional[tuple]:
    """(inode, mtime_ns, size) of a file, or None if it does not exist."""
    try:
        st = os.stat(filename)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def check_written(output, before: Optional[tuple]) -> None:
    """Raise unless ``output`` exists and is not the file that was there before the run
    (results are committed by rename: a new result is a new inode)."""
    after = file_state(output)
    if after is None:
        raise RuntimeError(f"the workflow finished without writing {output!r}")
    if after == before:
        raise RuntimeError(f"the workflow finished without replacing {output!r}")


# ---------------------------------------------------------------------------- the run
@dataclass
class ScanOutcome:
    """What happened to one scan: ``done``, ``redone``, ``skipped`` or ``failed``."""

    name: str
    output: str
    status: str
    seconds: float = 0.0
    message: str = ""
    info: dict = field(default_factory=dict)


@dataclass
class ReprocessReport:
    """Outcome of every scan, in input order."""

    outcomes: List[ScanOutcome]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0: every scan done or skipped; 1: at least one failed."""
        return 1 if self.count("failed") else 0

    def table(self) -> str:
        """The summary table, one line per scan and a totals line."""
        headers = ("scan", "status", "time_s", "output", "message")
        rows = [(o.name, o.status, f"{o.seconds:.1f}", o.output, o.message.splitlines()[0] if o.message else "")
                for o in self.outcomes]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        widths[-1] = len(headers[-1])
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        totals = ", ".join(f"{self.count(s)} {s}" for s in ("done", "redone", "skipped", "failed"))
        lines.append(f"{len(self.outcomes)} scans: {totals}")
        return "\n".join(lines)


def _local_submit(max_workers):
    pool = ProcessPoolExecutor(max_workers=max_workers or os.cpu_count(), mp_context=get_context("spawn"))
    return pool, (lambda *args: pool.submit(run_scan, *args)), pool.shutdown


def _dask_submit(scheduler, max_workers, engine=None):
    from concurrent.futures import ThreadPoolExecutor

    from dask.distributed import Client, LocalCluster

    closers = []
    if scheduler is None:
        cluster = LocalCluster(n_workers=max_workers or 2, threads_per_worker=1, processes=True,
                               host="127.0.0.1",  # workers on this machine: loopback only
                               dashboard_address=None)
        closers.append(cluster.close)
        client = Client(cluster)
    elif isinstance(scheduler, Client):
        client = scheduler
    else:
        client = Client(scheduler)
        closers.append(client.close)
    if scheduler is None:
        closers.insert(0, client.close)

    if engine == "dask":
        # ewoksdask: each workflow's tasks are scheduled on the cluster, from a client thread.
        threads = ThreadPoolExecutor(max_workers=max(1, len(client.scheduler_info().get("workers", {}))))
        closers.insert(0, threads.shutdown)
        address = client.scheduler.address

        def submit(graph, inputs, output, _engine):
            return threads.submit(run_scan, graph, inputs, output, "dask", {"scheduler": address})
    else:
        def submit(*args):
            return client.submit(run_scan, *args, pure=False)

    def close():
        for c in closers:
            c()

    return client, submit, close


def _ewoksjob_submit(config, queue, timeout):
    from .submit import submit_graph

    class _JobFuture:
        def __init__(self, graph, inputs, output, engine):
            self.output = output
            self.before = file_state(output)
            self.async_result = submit_graph(graph, inputs=inputs, config=config, queue=queue,
                                             engine=engine)
            self.t0 = time.perf_counter()

        def result(self):
            self.async_result.get(timeout=timeout, propagate=True, disable_sync_subtasks=False)
            check_written(self.output, self.before)
            # Seconds from submission to result: queue waiting included.
            return {"seconds": time.perf_counter() - self.t0, "job_id": self.async_result.id}

    return None, (lambda graph, inputs, output, engine: _JobFuture(graph, inputs, output, engine)), (lambda: None)


def reprocess(jobs: Sequence[ScanJob], workflow=None, executor: str = "local",
              max_workers: Optional[int] = None, scheduler=None, config=None,
              queue: Optional[str] = None, engine: Optional[str] = None, force: bool = False,
              timeout: Optional[float] = None,
              log: Optional[Callable[[str], None]] = None) -> ReprocessReport:
    """Run the workflow for every scan not up to date; record what was done.

    Parameters
    ----------
    jobs : sequence of ScanJob
        From :func:`read_scans`.
    workflow : str, path or dict, optional
        Workflow name, file or graph (default ``"xpcs"``).
    executor : {"local", "dask", "ewoksjob"}
        Where the workflows run.
    max_workers : int, optional
        Processes of the local pool / workers of a dask LocalCluster started for the run.
    scheduler : str or dask.distributed.Client, optional
        Dask scheduler address or client (``executor="dask"``); None starts a LocalCluster.
    config : str or dict, optional
        Celery configuration of the ewoksjob queue (``executor="ewoksjob"``; see
        :func:`ewoksxpcs.app.submit.celery_app`).
    queue : str, optional
        Celery queue name.
    engine : str, optional
        Ewoks engine of each workflow (None: sequential; ``"dask"``: ewoksdask).
    force : bool
        Redo scans that are up to date.
    timeout : float, optional
        Seconds to wait for one ewoksjob job.
    log : callable, optional
        Called with a line per finished scan.

    Returns
    -------
    ReprocessReport
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    graph = load_workflow(workflow)
    log = log or (lambda line: None)
    outcomes: List[Optional[ScanOutcome]] = [None] * len(jobs)
    todo = []
    prints = {}
    for i, job in enumerate(jobs):
        exists = os.path.exists(job.output)
        inputs = workflow_inputs(graph, job.parameters, overwrite=exists)  # ValueError: bad names
        try:
            check_not_input(job.output, input_files(job.parameters), "result file")
        except ValueError as e:
            outcomes[i] = ScanOutcome(job.name, job.output, "failed", message=str(e))
            log(f"failed   {job.name}: {e}")
            continue
        # Taken before the run: an input changed while it runs makes the next run redo it.
        prints[i] = fingerprint(graph, job.parameters)
        if exists and not force and is_up_to_date(graph, job.parameters, prints[i]):
            outcomes[i] = ScanOutcome(job.name, job.output, "skipped", message="up to date")
            log(f"skipped  {job.name}")
            continue
        redo = exists or read_record(job.output) is not None
        todo.append((i, job, inputs, "redone" if redo else "done"))
    if todo:
        for _, job, _, _ in todo:
            os.makedirs(os.path.dirname(os.path.abspath(job.output)), exist_ok=True)
        if executor == "local":
            _, submit, close = _local_submit(max_workers)
        elif executor == "dask":
            _, submit, close = _dask_submit(scheduler, max_workers, engine)
        else:
            _, submit, close = _ewoksjob_submit(config, queue, timeout)
        try:
            futures = []
            for i, job, inputs, status in todo:
                t0 = time.perf_counter()
                try:
                    futures.append((i, job, status, t0, submit(graph, inputs, job.output, engine)))
                except Exception as e:  # e.g. the queue is unreachable
                    outcomes[i] = ScanOutcome(job.name, job.output, "failed",
                                              message=f"submission failed: {reason(e)}")
            for i, job, status, t0, future in futures:
                try:
                    info = future.result()
                except Exception as e:
                    outcomes[i] = ScanOutcome(job.name, job.output, "failed",
                                              time.perf_counter() - t0, reason(e))
                    log(f"failed   {job.name}: {reason(e)}")
                    continue
                write_record(job.output, graph, job.parameters, prints[i], host=info.get("host"),
                             job_id=info.get("job_id"))
                outcomes[i] = ScanOutcome(job.name, job.output, status, info.get("seconds", 0.0), info=info)
                log(f"{status:8s} {job.name}")
        finally:
            close()
    return ReprocessReport([o for o in outcomes])


# ---------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ewoksxpcs reprocess``."""
    parser.add_argument("scans", nargs="+",
                        help="scan files or URLs (globs allowed: 'data/*.h5::/1.1'), or a YAML/CSV scan list")
    parser.add_argument("-o", "--output-dir", help="directory of the results of scans that give no output")
    parser.add_argument("-w", "--workflow", default=None, help="workflow name or JSON file (default: xpcs)")
    parser.add_argument("-p", "--parameter", action="append", type=_key_value, default=[],
                        metavar="NAME=VALUE", help="a task input for every scan (repeatable)")
    parser.add_argument("--qmask", help="label image (file or URL) for every scan")
    parser.add_argument("--method", help="correlation method for every scan")
    parser.add_argument("-e", "--executor", choices=EXECUTORS, default="local",
                        help="where workflows run (default: local process pool)")
    parser.add_argument("-j", "--workers", type=int, default=None,
                        help="local processes, or workers of the dask LocalCluster started when no --scheduler")
    parser.add_argument("--scheduler", help="dask scheduler address (tcp://host:8786)")
    parser.add_argument("--config", help="ewoksjob/Celery configuration (python file or module, yaml)")
    parser.add_argument("--queue", help="ewoksjob queue")
    parser.add_argument("--engine", help="Ewoks engine of each workflow (e.g. dask)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for one ewoksjob job")
    parser.add_argument("--force", action="store_true", help="redo scans that are up to date")


def run_from_args(args) -> int:
    """Run ``ewoksxpcs reprocess`` from parsed arguments; return the exit code."""
    parameters = dict(args.parameter)
    for key in ("qmask", "method"):
        if getattr(args, key, None) is not None:
            parameters[key] = getattr(args, key)
    try:
        jobs = read_scans(args.scans, parameters=parameters, output_dir=args.output_dir)
        report = reprocess(jobs, workflow=args.workflow, executor=args.executor,
                           max_workers=args.workers, scheduler=args.scheduler, config=args.config,
                           queue=args.queue, engine=args.engine, force=args.force,
                           timeout=args.timeout, log=lambda line: print(line, file=sys.stderr))
    except (ValueError, TypeError) as e:
        print(f"ewoksxpcs reprocess: error: {e}", file=sys.stderr)
        return 2
    print(report.table())
    return report.exit_code


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``ewoksxpcs reprocess`` as a function (returns the exit code)."""
    parser = argparse.ArgumentParser(prog="ewoksxpcs reprocess", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
