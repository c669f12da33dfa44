"""The one exception type a user can cause; the CLI prints its message on one line."""


class CxrkitError(Exception):
    """A problem with the user's input, files or options, with a message naming the fix."""


class TrainingInterrupted(CxrkitError):
    """Training stopped by Ctrl-C after saving a checkpoint it can resume from."""
