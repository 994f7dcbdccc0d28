"""The error raised for task data that cannot be used."""

from harness.errors import PrunescopeError


class DataError(PrunescopeError):
    """Unusable task data; the message names the file, the record and the field."""
