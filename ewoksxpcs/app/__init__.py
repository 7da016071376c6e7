"""The fronts: the command line (:mod:`.cli`), job-queue submission (:mod:`.submit`), reprocessing of
many scans (:mod:`.reprocess`), a scan's workflow parameters and record (:mod:`.scan_job`), and
dask-distributed correlation (:mod:`.distributed`).

Imports the layers below; nothing below imports it.
"""
