"""The one exception type for bad input: `UserError`.

Raise it where input is wrong (a flag, a gin binding, a file, a field): its message names
what to fix, and `fineline` prints it as one line. Any other exception is a bug and keeps
its traceback. It subclasses ValueError so that callers catching bad values still do.
"""


class UserError(ValueError):
  """Input the user must fix; the message names the file, field or binding."""
