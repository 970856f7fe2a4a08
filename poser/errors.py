"""The one exception type users see: the CLI prints its message as one line."""


class PoserError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    `exit_code` lets a command distinguish kinds of failure (2 = not available).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
