"""The exceptions users see: one family, each message says what, where and what to do."""


class QdartsError(Exception):
  """A user-facing error; the CLI prints its message on one line and exits with code 2."""


class ConfigError(QdartsError):
  """A config file or override is missing, malformed, or out of range."""


class DataError(QdartsError):
  """A dataset cannot be found or read."""


class SearchInterrupted(QdartsError):
  """SIGINT: the search stopped at a step boundary after writing a checkpoint."""


class NonFiniteSearch(QdartsError):
  """Too many consecutive steps with a non-finite loss or gradient."""


class RunFolderError(QdartsError):
  """The run folder cannot be created or written (full disk, no permission); the files written
  before, checkpoints included, are left as they were."""
