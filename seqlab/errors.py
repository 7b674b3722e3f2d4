"""seqlab's own exception types.

Every error a user can cause (bad config, bad data, bad checkpoint, bad input shape)
is raised as one of these, with a message that names the file, key or shape at fault
and what would be valid. The CLI turns them into a one-line message and a non-zero
exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SeqlabError(Exception):
    """Base class of every error seqlab raises on purpose."""


class ConfigError(SeqlabError, ValueError):
    """A config key, value or combination is invalid."""


class DataError(SeqlabError):
    """A data path is missing or empty, or its contents cannot be used."""


class TokenizerError(SeqlabError):
    """A tokenizer file is invalid, or token ids fall outside its vocabulary."""


class CheckpointError(SeqlabError):
    """A run directory or checkpoint is missing, incomplete, corrupt or unsafe."""


class ShapeError(SeqlabError, ValueError):
    """A tensor has a shape (or size) that the module cannot accept."""


class StateError(SeqlabError):
    """A mixer was asked for a streaming state it cannot carry."""


class TrainingError(SeqlabError):
    """Training cannot go on (for example, the loss became non-finite)."""
