"""Post-scan trigger: submit the workflow of one scan to an ewoksjob queue, get a job id back.

At the end of a scan, the beamline control system (e.g. a Bliss scan hook) calls::

    from ewoksxpcs.app.submit import submit_scan

    job_id = submit_scan(
        "/data/visitor/mx1234/id10/sample/sample_0001/sample_0001.h5::/3.1",
        output="/data/visitor/mx1234/id10/PROCESSED_DATA/sample_0001_scan3.h5",
        parameters={"qmask": "/data/.../qmask.h5::/labels", "method": "auto"},
        config="/users/blissadm/ewoks/celeryconfig.py",   # or EWOKS_CONFIG_URI in the environment
        queue="id10",
    )

or, from a shell: ``ewoksxpcs submit scan.h5::/3.1 --output out.h5 --qmask q.h5::/labels``,
which prints the job id. The call only sends a message: it returns at once (well under a
second) and never blocks the scan. An ewoksjob worker (``ewoksjob worker -Q id10`` with the same
configuration) runs the workflow; :func:`job_state` and :func:`wait_job` follow the job.

With the configuration ewoksxpcs ships (:mod:`ewoksxpcs.app.jobconfig`: Redis, late
acknowledgement, ``reject_on_worker_lost``), a job whose worker dies — its pool process or its
main process, even by SIGKILL — goes back to the queue and runs again when a worker is
available (or is reported ``FAILURE``); the saving task commits its files only when complete,
so no partial result is left.

The Celery configuration (broker and result backend) is given as ``config``: an ewoksjob
configuration URI (a Python file or module, a YAML file, e.g. ``ewoksxpcs.app.jobconfig``) or a
dict; by default the one ewoksjob uses (environment variable ``EWOKS_CONFIG_URI``, or the
``celeryconfig`` module).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import uuid
from typing import Any, Dict, List, Optional, Sequence, Union

from ..io.inputfiles import check_not_input, input_files
from .errors import reason
from .scan_job import INPUT_KEY, OUTPUT_KEY, load_workflow, unique_node_ids, workflow_inputs

__all__ = ["celery_app", "submit_graph", "submit_scan", "job_state", "wait_job", "main"]

#: Name of ewoksjob's Celery task that executes an Ewoks graph on a worker.
EXECUTE_GRAPH = "ewoksjob.apps.ewoks.execute_graph"

_APPS: Dict[str, Any] = {}
_APPS_LOCK = threading.Lock()
_SEND_LOCKS: Dict[int, threading.Lock] = {}  # id(app) -> its lock, made with the cached app


def _read_config(config: Union[str, dict, None]) -> dict:
    if isinstance(config, dict):
        return dict(config)
    from ewoksjob.config import get_cfg_uri, read_configuration

    uri = config or get_cfg_uri()
    if not uri:
        try:
            import celeryconfig  # noqa: F401  (Celery's default configuration module)
        except ImportError:
            raise ValueError(
                "no ewoksjob configuration: give config=... (--config), or set EWOKS_CONFIG_URI"
            ) from None
        uri = "celeryconfig"
    path = uri.replace("file://", "")
    if os.sep in uri and not os.path.exists(path):
        raise ValueError(f"ewoksjob configuration file {uri!r} does not exist")
    if path.endswith(".py") and os.path.isfile(path):
        return _read_py_file(path)
    return read_configuration(uri)


def _read_py_file(path: str) -> dict:
    """The settings of a Python configuration file, as ewoksjob's ``read_configuration`` gives
    them, read anew each time: ewoksjob imports the file as a module by its name, so a second
    ``celeryconfig.py`` of another directory in the same process got the first one's settings
    (jobs sent to the other queue), and it changes ``sys.path`` meanwhile (not thread-safe)."""
    import runpy
    import types

    settings = {k.lower(): v for k, v in runpy.run_path(path).items()
                if not k.startswith("_") and not isinstance(v, types.ModuleType)}
    return {**settings, **settings.pop("celery", {})}  # Celery's settings at the top level


def celery_app(config: Union[str, dict, None] = None):
    """A Celery app (client side) for the queue of ``config``; cached per configuration.

    Parameters
    ----------
    config : str or dict, optional
        ewoksjob configuration URI (Python file/module, YAML) or a dict of Celery settings
        (``broker_url``, ``result_backend``, ...).
    """
    try:
        import celery
    except ImportError:
        raise ImportError("the job queue needs Celery: install ewoksxpcs[job]") from None

    settings = _read_config(config)
    if not settings.get("broker_url"):
        raise ValueError("the ewoksjob configuration has no broker_url")
    if any(str(settings.get(k) or "").startswith(("redis://", "rediss://"))
           for k in ("broker_url", "result_backend")):
        try:
            import redis  # noqa: F401  (kombu's Redis transport imports it lazily)
        except ImportError:
            raise ImportError(
                "the job queue configuration uses Redis: install ewoksxpcs[job] for Redis"
            ) from None
    key = json.dumps(settings, sort_keys=True, default=str)
    with _APPS_LOCK:
        app = _APPS.get(key)
        if app is None:
            app = celery.Celery("ewoksxpcs", set_as_current=False)
            app.config_from_object(settings)
            _APPS[key] = app
            _SEND_LOCKS[id(app)] = threading.Lock()
    return app


def submit_graph(graph: Union[dict, str], inputs: Optional[List[dict]] = None, config=None,
                 queue: Optional[str] = None, engine: Optional[str] = None):
    """Send one workflow to the ewoksjob queue.

    Returns
    -------
    celery.result.AsyncResult
        ``.id`` is the job id.
    """
    app = celery_app(config)
    inputs = list(inputs or [])
    if engine == "dask":  # dask task keys unique to this job (ewoksdask uses node ids)
        graph, inputs = unique_node_ids(load_workflow(graph), inputs, uuid.uuid4().hex)
    kwargs: Dict[str, Any] = {"inputs": inputs, "outputs": []}
    if engine:
        kwargs["engine"] = engine
    options = {"queue": queue} if queue else {}
    # One message at a time per app: kombu's virtual transports (the SQLAlchemy broker of the
    # tests and small sites) share one channel between threads; a submission is a small
    # message, nothing worth running in parallel. (The failures once seen with 20 threads at
    # once were another race: kombu's SQLAlchemy transport creating the queue's row of a new
    # broker database while a worker starting declares it: kombu's, across processes; see
    # _wait_ready in tests/test_submit.py.)
    with _SEND_LOCKS[id(app)]:
        return app.send_task(EXECUTE_GRAPH, args=(graph,), kwargs=kwargs, **options)


def submit_scan(input: str, output: str, parameters: Optional[Dict[str, Any]] = None,
                workflow=None, config=None, queue: Optional[str] = None,
                overwrite: bool = False) -> str:
    """Submit the workflow for one scan; return the job id at once.

    Parameters
    ----------
    input : str
        The frames: ``file.h5::/scan`` URL (see :func:`ewoksxpcs.io.load.load_frames`).
    output : str
        Result file the workflow writes (it must not exist unless ``overwrite``).
    parameters : dict, optional
        Other task inputs (``qmask``, ``method``, frame range, ...).
    workflow : str, path or dict, optional
        Workflow name, file or graph (default ``"xpcs"``); sent whole, so workers need only
        ewoksxpcs installed.
    config : str or dict, optional
        ewoksjob configuration (see :func:`celery_app`).
    queue : str, optional
        Celery queue (e.g. the beamline's).
    overwrite : bool
        Replace an existing result.

    Returns
    -------
    str
        The job id (a Celery task id).
    """
    if not input or not output:
        raise ValueError("submit_scan needs an input (frames URL) and an output file")
    graph = load_workflow(workflow)
    params = {**(parameters or {}), INPUT_KEY: input, OUTPUT_KEY: os.path.abspath(output)}
    inputs = workflow_inputs(graph, params, overwrite=overwrite)
    check_not_input(params[OUTPUT_KEY], input_files(params), "result file")
    return submit_graph(graph, inputs=inputs, config=config, queue=queue).id


def job_state(job_id: str, config=None) -> str:
    """Celery state of a job: PENDING, STARTED, SUCCESS, FAILURE, REVOKED, ..."""
    return celery_app(config).AsyncResult(job_id).state


def wait_job(job_id: str, config=None, timeout: Optional[float] = None):
    """Wait for a job and return its result; raise its error if it failed."""
    return celery_app(config).AsyncResult(job_id).get(timeout=timeout, propagate=True)


# ---------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ewoksxpcs submit``."""
    from .scan_job import _key_value

    parser.add_argument("input", help="frames URL of the scan (file.h5::/3.1)")
    parser.add_argument("-o", "--output", required=True, help="result file")
    parser.add_argument("--qmask", help="label image (file or URL)")
    parser.add_argument("--method", help="correlation method (default: auto)")
    parser.add_argument("-p", "--parameter", action="append", type=_key_value, default=[],
                        metavar="NAME=VALUE", help="another task input (repeatable)")
    parser.add_argument("-w", "--workflow", default=None, help="workflow name or JSON file (default: xpcs)")
    parser.add_argument("--config", help="ewoksjob/Celery configuration (default: $EWOKS_CONFIG_URI)")
    parser.add_argument("--queue", help="Celery queue")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result")
    parser.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="wait for the job to finish (exit 1 if it fails)")


def run_from_args(args) -> int:
    """Run ``ewoksxpcs submit`` from parsed arguments; print the job id; return the exit code."""
    parameters = dict(args.parameter)
    for key in ("qmask", "method"):
        if getattr(args, key, None) is not None:
            parameters[key] = getattr(args, key)
    try:
        job_id = submit_scan(args.input, args.output, parameters=parameters, workflow=args.workflow,
                             config=args.config, queue=args.queue, overwrite=args.overwrite)
    except (ValueError, TypeError) as e:
        print(f"ewoksxpcs submit: error: {e}", file=sys.stderr)
        return 2
    print(job_id)
    sys.stdout.flush()
    if args.wait is not None:
        try:
            wait_job(job_id, config=args.config, timeout=args.wait)
        except Exception as e:
            print(f"ewoksxpcs submit: job {job_id} failed: {reason(e)}", file=sys.stderr)
            return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``ewoksxpcs submit`` as a function (returns the exit code)."""
    parser = argparse.ArgumentParser(prog="ewoksxpcs submit", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
