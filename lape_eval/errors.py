"""The one exception type for problems a user can fix.

The CLI prints these as a one-paragraph message with a non-zero exit code and no traceback;
anything else is a bug and keeps its traceback.
"""


class LapeEvalError(ValueError):
    """Bad input: the message names the problem and the fix."""
