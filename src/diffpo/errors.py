"""The base class of errors in what the user gave (settings, data, missing files).

The command line prints such an error's message alone, without a traceback (``--debug``
shows one); any other exception is a bug and keeps its traceback. This module imports
nothing, so the command line can catch these errors before torch is imported.
"""


class UserError(Exception):
    """A problem with the user's input, not with diffpo; the message says what and where."""


class ParamsError(UserError, ValueError):
    """params.yaml is malformed; the message names the file and the key."""
