"""One exception family, so callers (CLI, app) can turn every expected failure into one sentence."""


class ECGFMError(Exception):
    """A failure the user can act on; its message is one plain sentence that names the file."""


class ECGReadError(ECGFMError):
    """An ECG file that cannot be read: unknown format, corrupt, truncated, missing companion."""


class CheckpointError(ECGFMError):
    """A checkpoint that is not an ECG-FM model we can run exactly."""


class WeightsUnavailableError(ECGFMError):
    """The weights cannot be found or downloaded; the message says how to provide them."""
