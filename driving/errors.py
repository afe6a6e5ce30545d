"""Errors a user can cause. The CLI prints their message as one line and exits 2, no traceback."""


class UserError(Exception):
    """Bad input: the message names the thing that is wrong and how to fix it."""
