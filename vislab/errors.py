"""Errors that are the user's to fix: `vislab` prints them as one line and exits with code 2."""


class UsageError(Exception):
    """A mistake in what the user asked for (an option, a path, a device), said in one line."""
