"""The one exception type meant for users.

Anything raised as :class:`RecokdError` carries a message that says what was wrong and what
to do about it. The command line prints it as one line and exits non-zero; the Slicer module
shows it in a dialog. Everything else is a bug and keeps its traceback.
"""

import errno


class RecokdError(Exception):
    """A problem with the user's input, files or environment, explained in the message."""


class CancelledError(Exception):
    """Raised inside long work when the user asked to cancel.

    Deliberately not a ``RuntimeError``: nnU-Net's predictor catches ``RuntimeError`` and
    retries on the CPU, which would swallow a cancel.
    """


# "No space left on device", "Disk quota exceeded", "File too large" (a file-size limit).
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def no_space_error(error: BaseException) -> RecokdError | None:
    """The user-facing form of a write that ran out of disk space, or ``None`` for any other error.

    Label files, model packages and checkpoints go to a temporary name first and are renamed
    when complete, so the message can promise that none of them was left half-written.
    """
    if not isinstance(error, OSError) or error.errno not in _NO_SPACE:
        return None
    where = f" while writing {error.filename}" if error.filename else ""
    return RecokdError(f"Out of disk space{where} ({error.strerror}). Free space or choose another folder, then "
                       "run again; outputs, packages and checkpoints are only ever replaced by complete files.")
