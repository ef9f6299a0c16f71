"""The other storages of an environment: blind search index, data lake exports, backups.

Each is created encrypted under the environment's current key when its feature is enabled, follows
the environment through key changes (its DEKs are rewrapped with the rest; a swap or re-encryption
replaces the search key and rebuilds the index as a job) and is refused on SQL-restricted (legacy
BYOK) environments. Importing this package registers the feature-enabled hook.
"""

from __future__ import annotations

from keyshift.features.common import register_hooks

register_hooks()
