"""Exceptions a user can cause; the CLI prints their message on one line and exits non-zero."""


class SssRtError(Exception):
    """Base class of the errors sss-rt reports to users without a traceback."""

    exit_code = 1


class ModelError(SssRtError):
    """A model, checkpoint or engine file is missing, unreadable or not what it should be."""

    exit_code = 3


class ImageError(SssRtError):
    """An input image cannot be read or decoded."""

    exit_code = 4


class BackendUnavailableError(SssRtError):
    """A requested backend or device needs a package or hardware that is not present."""

    exit_code = 5


class OutputError(SssRtError):
    """Outputs cannot be written at all (disk full, read-only or forbidden output folder): the
    run stops, since every later file would fail the same way."""

    exit_code = 6
