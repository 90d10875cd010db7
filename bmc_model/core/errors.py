"""The one exception type the CLI turns into a one-line message and exit code 2."""


class BMCError(ValueError):
    """Bad user input or an impossible request; the message is shown as is."""
