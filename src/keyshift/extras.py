"""Optional extras: a feature whose third-party package is not installed says which extra to install.

`pip install keyshift` gives the core (local vault, AWS KMS, SQLite/PostgreSQL, API, CLI). The data
lake needs `keyshift[lake]` (pyarrow), PKCS#11 vaults `keyshift[hsm]` (python-pkcs11), KMIP vaults
`keyshift[kmip]` (PyKMIP). Without it the feature fails with MissingExtraError, never a traceback.
"""

from __future__ import annotations

from typing import ClassVar

from keyshift.errors import ConflictError

EXTRAS = {"lake": "pyarrow", "hsm": "python-pkcs11", "kmip": "PyKMIP"}


class MissingExtraError(ConflictError):
    """A feature's optional package is not installed. Exit 4 (precondition), HTTP 501."""

    code = "extra_not_installed"
    http_status: ClassVar[int] = 501

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs {EXTRAS[extra]}, which is not installed: pip install 'keyshift[{extra}]'"
        )
        self.extra = extra
