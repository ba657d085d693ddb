"""The one exception type the CLI turns into a single clear line on stderr."""


class SlimtuneError(Exception):
    """A problem with the user's input or environment, worded for the user."""
