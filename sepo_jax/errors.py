"""Errors a user must fix (an input or the environment, not a bug): the command-line tools print them
as one line `sepo_jax: error: ...` with exit code 2 and no traceback (`sepo_jax.cli`)."""


class UserError(Exception):
    """Base of the errors the CLI reports as one line, whenever they are raised."""


class WorkdirError(UserError, RuntimeError):
    """A workdir that cannot take this run: busy, unusable, or holding a run that would be lost."""


class CheckpointError(UserError, RuntimeError):
    """No checkpoint of the workdir restores into this config's model."""


class MemoryBudgetError(UserError, ValueError):
    """A step needs more memory than a device has."""
