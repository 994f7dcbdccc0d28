"""The one base class of errors caused by the user's input (config, data, paths, answers).

The CLI prints such an error's message as is and exits non-zero; anything else is a bug and
keeps its traceback. Messages name the file, the record and the field.
"""


class PrunescopeError(Exception):
    """Bad input, stated so the user can fix it."""
