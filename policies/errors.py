"""The policies package's exceptions (configuration mistakes only: "not now" and "never" are statuses).

::

    PolicyError
    ├── UnknownName         nothing is registered under that name (lists the valid ones)
    │   ├── UnknownPolicy
    │   └── UnknownPlugin
    └── DuplicateName       a name is registered twice
        ├── DuplicatePolicy
        └── DuplicatePlugin
"""


class PolicyError(Exception):
    """Base of the policies package's errors."""


class UnknownName(PolicyError):
    pass


class DuplicateName(PolicyError):
    pass


class UnknownPolicy(UnknownName):
    pass


class UnknownPlugin(UnknownName):
    pass


class DuplicatePolicy(DuplicateName):
    pass


class DuplicatePlugin(DuplicateName):
    pass
