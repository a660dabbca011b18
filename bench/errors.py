"""The errors a user's input raises, reported by the entry as one line without a traceback (exit
code 2): a leaf module, so everything that checks a value or reads a data file imports it downward."""


class ConfigError(ValueError):
    """A bad value in the run's config; reported as one line, without a traceback (exit code 2)."""


class DataError(ValueError):
    """A bad row or file: the message names the file (or hub split) and line."""


def input_error(err: BaseException) -> Exception | None:
    """The bad config or data behind `err`, if that is what it is (Hydra's instantiate wraps a
    task's DataError in its own exception): refused with no record, reported in one line."""
    while err is not None:
        if isinstance(err, (ConfigError, DataError)):
            return err
        err = err.__cause__
    return None
