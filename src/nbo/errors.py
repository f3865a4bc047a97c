"""Domain errors: each carries a message a user can act on without reading code.

The command line prints them as one line with a non-zero exit; the service turns
them into 4xx responses in one exception handler.
"""


class NboError(Exception):
    """Base class for errors that are the user's to fix, not bugs."""


class PurchaseDataError(NboError):
    """A purchase file that cannot be read or used, naming the file, column and problem."""

    def __init__(self, path: str, problem: str, column: str | None = None) -> None:
        self.path = path
        self.column = column
        self.problem = problem
        where = f"{path}: column '{column}'" if column else path
        super().__init__(f"{where}: {problem}")


class MappingError(NboError):
    """A column mapping that is missing or malformed."""


class ArtifactError(NboError):
    """A model artifact that is missing, corrupt or incompatible and must not be served."""


class QualityGateError(NboError):
    """The trained model did not beat its baseline, so it is not published."""


class ConfigError(NboError):
    """A training configuration that cannot be used."""
