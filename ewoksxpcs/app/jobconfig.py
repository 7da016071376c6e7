"""The job-queue configuration ewoksxpcs ships: Celery settings with which no job is lost.

Use it as the ewoksjob configuration of the workers and of the submitting side::

    export EWOKS_CONFIG_URI=ewoksxpcs.app.jobconfig
    export EWOKSXPCS_REDIS_URL=redis://queue-host:6379/0
    ewoksjob worker -Q id10                      # workers
    ewoksxpcs submit scan.h5::/3.1 -o out.h5 --qmask q.npy --config ewoksxpcs.app.jobconfig

Why each setting:

- **Redis** as broker and result backend: its transport keeps each delivered message until it
  is acknowledged and redelivers it when a worker vanished (after ``visibility_timeout``),
  which the SQL and file transports do not: with them a worker killed by SIGKILL loses jobs.
- ``task_acks_late`` with ``task_reject_on_worker_lost``: a job is acknowledged when it
  finished, not when it started, so a job whose worker died goes back to the queue.
- ``worker_prefetch_multiplier = 1``: a worker holds no more jobs than it runs.
- ``task_track_started``: a running job reports STARTED (not PENDING).
- ``task_time_limit`` (soft limit one minute earlier): a hung job fails instead of holding a
  worker forever. ``visibility_timeout`` is longer than the time limit, so a job still running
  is never handed to a second worker.

Environment variables (read when the module is imported): ``EWOKSXPCS_REDIS_URL`` (default
``redis://localhost:6379/0``), ``EWOKSXPCS_JOB_TIME_LIMIT`` (s, default 21600: 6 h),
``EWOKSXPCS_VISIBILITY_TIMEOUT`` (s, default: time limit + 600), ``EWOKSXPCS_RESTORE_INTERVAL``
(s between sweeps for messages of dead workers, default 10).

The kombu Redis transport needs the ``redis`` package: ``pip install ewoksxpcs[job]``.
"""

import os as _os


def _env_float(name: str, default: float) -> float:
    value = _os.environ.get(name)
    return float(value) if value else float(default)


def settings(redis_url=None, time_limit=None, visibility_timeout=None,
             restore_interval=None) -> dict:
    """The Celery settings (a dict for ``celery_app(config=...)``); None: environment/defaults.

    Parameters
    ----------
    redis_url : str, optional
        ``redis://host:port/db`` of the broker and the result backend.
    time_limit : float, optional
        Seconds a job may run (the soft limit, raising in the job, is one minute earlier, or
        90 % of short limits).
    visibility_timeout : float, optional
        Seconds after which a delivered, unacknowledged job (its worker died) is delivered
        again; must exceed ``time_limit``.
    restore_interval : float, optional
        Seconds between the worker's sweeps for such jobs.
    """
    url = redis_url or _os.environ.get("EWOKSXPCS_REDIS_URL") or "redis://localhost:6379/0"
    limit = time_limit or _env_float("EWOKSXPCS_JOB_TIME_LIMIT", 6 * 3600)
    visibility = visibility_timeout or _env_float("EWOKSXPCS_VISIBILITY_TIMEOUT", limit + 600)
    if visibility <= limit:
        raise ValueError(
            f"visibility timeout {visibility:g} s must exceed the job time limit {limit:g} s "
            "(else a running job is handed to a second worker)"
        )
    interval = restore_interval or _env_float("EWOKSXPCS_RESTORE_INTERVAL", 10)
    transport = {
        "visibility_timeout": visibility,
        "unacked_restore_interval": interval,
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": url,
        "result_backend": url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "broker_connection_retry_on_startup": True,
        "result_serializer": "pickle",
        "accept_content": ["application/json", "application/x-python-serialize"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": limit,
        "task_soft_time_limit": max(limit - 60, 0.9 * limit),
        "result_extended": True,
    }


# Module-level settings: what ewoksjob reads from ``EWOKS_CONFIG_URI=ewoksxpcs.app.jobconfig``.
globals().update(settings())
