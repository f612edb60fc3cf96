"""Exception types shared by the whole package (a leaf module)."""


class ForensicsError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class WeightsNotFoundError(ForensicsError, FileNotFoundError):
    """A weight file is absent; the message names it, its public source and where to put it."""


class CheckpointError(ForensicsError, ValueError):
    """A checkpoint file is unreadable, truncated or does not match the architecture."""


class ImageReadError(ForensicsError, OSError):
    """An image file cannot be decoded (unreadable, truncated, zero bytes, not an image)."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than the configured limit (decompression-bomb guard)."""


class DatasetLayoutError(ForensicsError, ValueError):
    """A data-set folder does not have the layout that was asked for (or holds no images)."""


class InputError(ForensicsError, ValueError):
    """What the user gave (an option's value, a split file, a selection of images) cannot be used; the message
    names what was given and what is missing."""


class MaskError(ImageReadError):
    """A mask cannot be used with its image: unreadable, missing for a fake, or of another size."""
