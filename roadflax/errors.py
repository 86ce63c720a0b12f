"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
  """A mistake in the user's input (data, config, workdir, files).

  Its message is one line that names the thing to fix; the command line prints
  it without a traceback and exits non-zero.
  """
