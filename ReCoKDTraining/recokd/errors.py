"""The one exception type meant for users.

Anything raised as :class:`RecokdError` carries a message that says what was wrong and what
to do about it. The command line prints it as one line and exits non-zero; the Slicer module
shows it in a dialog. Everything else is a bug and keeps its traceback.
"""


class RecokdError(Exception):
    """A problem with the user's input, files or environment, explained in the message."""


class CancelledError(Exception):
    """Raised inside long work when the user asked to cancel.

    Deliberately not a ``RuntimeError``: nnU-Net's predictor catches ``RuntimeError`` and
    retries on the CPU, which would swallow a cancel.
    """
