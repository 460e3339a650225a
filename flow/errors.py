"""The one exception type the CLI turns into a single error line and exit 1."""


class FlowError(Exception):
    """Bad input or an impossible request: the message names the file, node, layer or limit."""
