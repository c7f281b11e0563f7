"""The one error a hook raises for bad input; the app turns it into a 400."""


class HookInputError(ValueError):
    """The request is not valid for this hook; the message says what is wrong."""
