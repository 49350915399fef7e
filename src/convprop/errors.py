"""convprop's own exception: a user mistake, reported as one line, never a traceback."""


class ConvpropError(Exception):
    """A problem with the user's input (a file, an option, a value).

    The message is one line that names the problem; the CLI prints it as
    ``error: <message>`` and exits with status 2.
    """


def short_reason(exc: BaseException) -> str:
    """An exception's message on one line (at most 200 characters), or its type's name:
    the reason in parentheses of a one-line ConvpropError."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class DataError(ConvpropError):
    """A data file or directory that cannot be used (missing, truncated, malformed)."""


class CheckpointError(ConvpropError):
    """A checkpoint that cannot be resumed (missing, corrupt, or of another run or data set)."""


class SpecError(ConvpropError):
    """A bad architecture string, activation name or shape that does not fit."""


class ModelError(ConvpropError):
    """A model file (or an image or .mat file given with it) that cannot be used: missing,
    truncated, of another format version, or with arrays that do not fit the spec."""


ModelFileError = ModelError  # the earlier name
