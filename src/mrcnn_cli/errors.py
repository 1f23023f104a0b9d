"""The two ways mrcnn talks to its user: an error that stops, a warning that does not, each naming
options the way the user gave them: Python keywords (`style='caffe'`) to a program that imports
the library, flags (`--style caffe`) to someone at the command line."""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import warnings
from collections.abc import Iterator
from types import FrameType


class MrcnnError(Exception):
    """A user-facing failure: the CLI prints its message as one `error:` line and exits 1."""


class MrcnnWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints one `warning:` line)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (a third-party library's often runs to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


# Which voice messages speak in.  A context variable, not a module global: the command line sets it
# for its own run, and a program that imports the library keeps the default whatever runs beside it.
_COMMAND_LINE = contextvars.ContextVar('mrcnn_command_line', default=False)
_FLAGS = {'name': '--model'}                              # Python keyword -> flag, where they differ
_UNSET = object()


@contextlib.contextmanager
def command_line_voice() -> Iterator[None]:
    """Messages made inside this block name command-line flags (what `mrcnn` itself uses)."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def speaking_to_command_line() -> bool:
    return _COMMAND_LINE.get()


def option(name: str, value: object = _UNSET, *, meta: str | None = None) -> str:
    """An option as a message names it: `option('style', 'caffe')` is "style='caffe'" to a Python
    caller and '--style caffe' at the command line; `meta` stands for a value ('PATH')."""
    if not _COMMAND_LINE.get():
        if value is not _UNSET:
            return f'{name}={value!r}'
        return f'{name}={meta}' if meta else name
    if name == 'precision' and value in ('fp16', 'bf16'):   # their own flags
        return f'--{value}'
    flag = _FLAGS.get(name, '--' + name.replace('_', '-'))
    if value is True:   # a flag that is on
        return flag
    if value is not _UNSET:
        return f'{flag} {value}'
    return f'{flag} {meta}' if meta else flag


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = MrcnnWarning) -> None:
    """A warning attributed to the first frame outside mrcnn_cli: the caller's own line, however
    deep inside the library it was found."""
    frame: FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
