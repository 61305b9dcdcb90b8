"""Exception types of lightglue_ros; every error the package raises on purpose is one of these."""


class LightGlueRosError(Exception):
    """Base class of all errors raised by lightglue_ros."""


class CheckpointError(LightGlueRosError):
    """A weights file is missing, unsafe, corrupt or does not fit the model."""


class WeightsNotFoundError(CheckpointError):
    """No local copy of a weights file exists and it could not be fetched."""


class InvalidImageError(LightGlueRosError, ValueError):
    """An input image is empty, of an unsupported dtype/shape, or cannot be decoded."""


class ImageTooLargeError(InvalidImageError):
    """An input image has more pixels than the configured cap (refused before decoding)."""


class InvalidFeaturesError(LightGlueRosError, ValueError):
    """Keypoints and descriptors that cannot be matched: mismatched counts or shapes, NaN."""


class CalibrationError(LightGlueRosError, ValueError):
    """Camera intrinsics are missing or invalid (zero or NaN focal length, unknown model)."""


class TimestampError(LightGlueRosError, ValueError):
    """A frame's timestamp does not increase with respect to the previous frame."""


class ConfigError(LightGlueRosError, ValueError):
    """An unknown configuration key or an out-of-range value."""


class BagError(LightGlueRosError):
    """A bag cannot be opened or read, or lacks the requested topic."""
