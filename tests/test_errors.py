"""One-line reasons: the root cause of an exception chain (ewoksxpcs.app.errors)."""

import errno
import os
from concurrent.futures import ProcessPoolExecutor

import pydantic
import pytest

from ewoksxpcs.app.errors import reason


def _chain(*excs):
    """Raise excs[0] from excs[1] from ...; return the outermost."""
    inner = None
    for exc in reversed(excs):
        try:
            try:
                if inner is not None:
                    raise inner
            except BaseException as cause:
                raise exc from cause
            raise exc
        except BaseException as e:
            inner = e
    return inner


def test_full_disk_wins_over_what_failed_while_handling_it():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    try:
        try:
            raise full
        except OSError:
            raise AttributeError("'_idat' object has no attribute 'fileno'")
    except AttributeError as e:
        outer = e
    assert reason(outer) == "No space left on device"


def test_ewoks_wrapper_and_pydantic_are_condensed():
    class Inputs(pydantic.BaseModel):
        frame_period: float

    with pytest.raises(pydantic.ValidationError) as info:
        Inputs(frame_period="abc")
    wrapped = _chain(RuntimeError("Execution failed for ewoks task 'L' (id: 'load'): bad"),
                     info.value)
    assert reason(wrapped) == ("frame_period: Input should be a valid number, unable to parse "
                               "string as a number (got 'abc')")


def _fail(text):
    raise RuntimeError(f"Execution failed for ewoks task 'L' (id: 'load', task: 'x'): {text}")


def test_error_from_a_process_pool_is_its_message():
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(RuntimeError) as info:
            pool.submit(_fail, "could not convert string to float: 'abc'").result()
    assert reason(info.value) == "could not convert string to float: 'abc'"


def test_file_errors_name_the_file():
    assert reason(FileNotFoundError(2, "No such file or directory", "/x/y.h5")) == \
        "[Errno 2] No such file or directory: '/x/y.h5'"
