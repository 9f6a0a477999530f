"""The one exception type users see: a mistake in the input, named in one line."""


class InterpError(ValueError):
    """Bad input or an unavailable resource. The message says what is wrong and what to do."""
