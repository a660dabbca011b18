"""The error a bad config value raises (a leaf module: everything that checks a value imports it)."""


class ConfigError(ValueError):
    """A bad value in the run's config; reported as one line, without a traceback (exit code 2)."""
