"""User-facing errors. The CLI turns any `DronetrackError` into one line on stderr and exit status 2."""
from __future__ import annotations


class DronetrackError(Exception):
    """Bad input or configuration: reported as one line, exit status 2, no traceback."""

    def __str__(self) -> str:  # one line even when a file name or a YAML key holds a line break
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


class InputError(DronetrackError):
    """A file is missing, unreadable or malformed. Name the file (and line) in the message."""

    def __init__(self, message: str, path: object | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ConfigError(DronetrackError):
    """A configuration key is unknown or a value is bad. The message names the key."""
