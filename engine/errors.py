"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class HalopaintError(Exception):
    """A user-facing error: bad input, mismatched files, impossible plan.

    The message must fit on one line and name the problem (and the file or option at fault).
    """
