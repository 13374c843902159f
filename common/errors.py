"""The one exception type for input a user can fix."""


class InputError(ValueError):
    """Bad input: the message is one line that says what to fix.

    The CLI prints it without a traceback and exits with status 2; library callers can catch it
    like any ValueError.
    """


class BudgetError(InputError):
    """A privacy budget no run can meet (ε unreachable at this δ and N, δ not below 1/N): a sweep cell
    that raises it is recorded as infeasible, not failed."""
