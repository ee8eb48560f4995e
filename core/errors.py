"""Domain errors. Every package raises these; only ``serving`` maps them to HTTP codes and only
the CLI maps them to exit codes and one-line messages."""

from __future__ import annotations


class DecisioningError(Exception):
    """Base of every error the system raises on purpose."""


class InputError(DecisioningError):
    """The user's input (a file, a folder, a column, a parameter) is not usable as given."""


class SourceError(InputError):
    """A raw source file cannot be imported at all (missing, empty, a required column missing)."""

    def __init__(self, file: str, reason: str):
        self.file = file
        self.reason = reason
        super().__init__(f"{file}: {reason}")


class ConfigError(InputError):
    """A configuration file or value is invalid."""


class WorkspaceError(InputError):
    """The workspace lacks what a step needs (say, profiles before features)."""


class NotFoundError(DecisioningError):
    """A named thing (customer, model, decision) does not exist."""


class UnavailableError(DecisioningError):
    """A component (feature store, model registry, model) cannot answer right now."""
