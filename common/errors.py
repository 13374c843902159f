"""The one exception type for input a user can fix."""


class InputError(ValueError):
    """Bad input: the message is one line that says what to fix.

    The CLI prints it without a traceback and exits with status 2; library callers can catch it
    like any ValueError.
    """
