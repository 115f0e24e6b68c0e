"""The one exception type for problems with what a user gave us (files, configs, flags).

The command line catches :class:`UserError` and prints its message as a single line with a
non-zero exit, never a traceback. Messages name the file or video concerned and the numbers
involved, e.g. ``features/train/rgb/v1.npy: 740 segments, but flow has 741``.
"""


class UserError(Exception):
    """A problem with user input, reported as one line by the CLI (exit status 2)."""
