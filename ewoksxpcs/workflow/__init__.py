"""The workflow: the path from a file to a result (:mod:`.pipeline`), the q-mask built from the
geometry and masks (:mod:`.maskbin`), cancellation and progress of a running step.

Imports the engine, io, opencl and correlators; imported by the Ewoks tasks and the fronts.
"""
