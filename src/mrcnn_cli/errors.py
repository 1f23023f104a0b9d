"""The two ways mrcnn talks to its user: an error that stops, a warning that does not."""


class MrcnnError(Exception):
    """A user-facing failure: the CLI prints its message as one `error:` line and exits 1."""


class MrcnnWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints one `warning:` line)."""


def first_line(exc, limit=200):
    """The first line of an exception's message (a third-party library's often runs to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
