"""The policies package's exceptions (configuration mistakes only: "not now" and "never" are decisions).

::

    PolicyError
    ├── UnknownPolicy       no policy is registered under that name (lists the valid ones)
    └── DuplicatePolicy     a name is registered twice
"""


class PolicyError(Exception):
    """Base of the policies package's errors."""


class UnknownPolicy(PolicyError):
    pass


class DuplicatePolicy(PolicyError):
    pass
