"""One line that says why something failed: the root cause of an exception chain.

Used by the command line (``ewoksxpcs: error: <reason>``), reprocessing (the summary table) and
job submission. Ewoks wraps a task's error ("Execution failed for ewoks task ..."); pydantic
reports invalid task inputs over several lines; a full disk raised while writing may surface as
whatever failed while handling it. :func:`reason` returns, on one line: the first system error
of the chain (no space left, quota, file too large, read-only file system, I/O error, out of
memory) as its plain message ("No space left on device"), else the innermost exception's
message, with the file name of file errors.
"""

from __future__ import annotations

import errno
import re

__all__ = ["reason"]

#: errno values that are the real reason whatever was raised while handling them.
_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.ENOMEM}


def _is_validation_error(exc) -> bool:
    return type(exc).__name__ == "ValidationError" and hasattr(exc, "errors")


def _condense_pydantic_text(message: str) -> str:
    """A pydantic error that crossed a process as text: keep the field, the message, the value.

    ``Invalid task inputs: 1 validation error for Inputs\nframe_period\n  Input should be a
    valid number ... [type=float_parsing, input_value='abc', input_type=str]\n  For further
    information visit ...`` → ``frame_period: Input should be a valid number ... (got 'abc')``.
    """
    match = re.search(r"validation errors? for \w+\s*\n\s*(\S+)\s*\n\s*(.+?)\s*"
                      r"\[type=[^,\]]*(?:, input_value=(.*?), input_type=\w+)?\]", message,
                      flags=re.S)
    if not match:
        return message
    field, text, value = match.groups()
    return f"{field}: {text}" + (f" (got {value})" if value and len(value) < 80 else "")


def _validation_message(exc) -> str:
    """pydantic: ``frame_period: Input should be a valid number ... (got 'abc')``."""
    try:
        first = exc.errors()[0]
    except Exception:  # not pydantic's after all
        return str(exc)
    where = ".".join(str(p) for p in first.get("loc", ())) or "input"
    message = f"{where}: {first.get('msg', 'invalid')}"
    if "input" in first and not isinstance(first["input"], dict):
        message += f" (got {first['input']!r:.80})"
    return message


def reason(exc: BaseException) -> str:
    """One line: the root cause (Ewoks wraps task errors; a full disk wins over what failed
    while handling it)."""
    chain = [exc]
    seen = {id(exc)}
    while True:
        inner = chain[-1]
        nxt = inner.__cause__ or (inner.__context__ if not inner.__suppress_context__ else None)
        # A process pool's text traceback of the remote error is no cause of its own.
        if nxt is None or id(nxt) in seen or type(nxt).__name__ == "_RemoteTraceback":
            break
        seen.add(id(nxt))
        chain.append(nxt)
    system = [e for e in chain if isinstance(e, OSError) and e.errno in _SYSTEM_ERRNOS]
    inner = system[0] if system else chain[-1]
    if isinstance(inner, OSError) and inner.errno in _SYSTEM_ERRNOS and inner.strerror:
        message = inner.strerror  # not "[Errno 28] ..."
    elif _is_validation_error(inner):
        message = _validation_message(inner)
    else:
        message = str(inner) or type(inner).__name__
    prefix = "Execution failed for ewoks task"
    if message.startswith(prefix) and "): " in message:
        message = message.split("): ", 1)[1]
    message = _condense_pydantic_text(message)
    if (
        isinstance(inner, (FileNotFoundError, FileExistsError, PermissionError))
        and inner.filename
        and str(inner.filename) not in message
    ):
        message = f"{message}: {inner.filename}"
    return " ".join(message.split())
