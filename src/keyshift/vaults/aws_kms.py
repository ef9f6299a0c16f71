"""`aws-kms`: KEKs in AWS KMS (or anything speaking its API, e.g. moto's server in tests), via boto3.

Config: ``{"endpoint_url": str | None, "region": str}``. Credentials come from the usual AWS
environment/config chain (AWS_ACCESS_KEY_ID, ...), never from Keyshift's database.

Keys are named by key id, key ARN or alias (``alias/NAME``, its ARN, or a bare NAME meaning
``alias/NAME``). The *version* of a key is the concrete KMS key id it resolved to: a key named by
alias gets a new version when the alias is pointed at another key (that is what `rotate` does), and
an unwrap always names the exact key id its wrap used. KMS' own automatic rotation is transparent
to ciphertexts and needs no rewrap.

Every wrap and unwrap first calls DescribeKey and refuses keys that are disabled or pending
deletion itself (KeyDisabledError / KeyDeletedError) — moto's server does not enforce key state.
The caller's encryption context is bound as the KMS EncryptionContext. Errors map to the typed vault
errors; throttling, 5xx and connection failures are retryable (callers use `with_retries`; boto3's
own retries are off so that attempts are counted in one place).

Access: KMS decides with IAM and key policies for the AWS principal Keyshift runs as; Keyshift
identities are not AWS principals, so `grant`/`revoke_grant` are not supported and `check_access`
reports what that principal can do with the key (from its state and usage).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from keyshift.errors import KeyshiftError, UsageError, VaultUnavailableError
from keyshift.vaults.base import (
    AccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyInfo,
    KeyNotFoundError,
    KeyRef,
    KeyType,
    KeyVersionInfo,
    Permission,
    ThrottledError,
    UnwrapError,
    VaultInfo,
    VaultLocalError,
    WrappedKey,
)
from keyshift.vaults.external import canonical_context, check_dek, declared_info, unsupported

if TYPE_CHECKING:
    from keyshift.db.models import VaultRecord
    from keyshift.runtime import Runtime

KIND = "aws-kms"
ALGORITHM = "aws-kms:SYMMETRIC_DEFAULT"
_KEY_ID = re.compile(r"^(mrk-)?[0-9a-fA-F-]{32,40}\Z")
_REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+){1,4}\Z")
MAX_CIPHERTEXT = 6144

_THROTTLE = {
    "ThrottlingException",
    "LimitExceededException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
}
_UNAVAILABLE = {"KMSInternalException", "DependencyTimeoutException", "ServiceUnavailable", "InternalFailure"}
# The key owner's answer: this principal may not use the key (IAM, key policy, grant removed).
_DENIED = {"AccessDeniedException"}
# This process's credentials are missing, wrong or expired: local, never a revocation.
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "ExpiredToken",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "SignatureDoesNotMatch",
}
_BAD_CIPHERTEXT = {"InvalidCiphertextException", "IncorrectKeyException"}


def validate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    extra = set(raw) - {"endpoint_url", "region"}
    if extra:
        raise UsageError(f"aws-kms vault: unknown settings {sorted(extra)}")
    region = raw.get("region")
    if not isinstance(region, str) or not _REGION.match(region):
        raise UsageError("aws-kms vault: --region is required (e.g. eu-west-1)")
    endpoint = raw.get("endpoint_url")
    if endpoint is not None and (
        not isinstance(endpoint, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", endpoint)
    ):
        raise UsageError("aws-kms vault: --endpoint-url must be an http(s) URL")
    return {"endpoint_url": endpoint, "region": region}


def key_id_for(name: str) -> str:
    """What KMS' KeyId parameter takes for a Keyshift key name."""
    if not name or len(name) > 2048:
        raise UsageError("aws-kms key name must be 1..2048 characters")
    if name.startswith(("arn:", "alias/")) or _KEY_ID.match(name):
        return name
    return f"alias/{name}"


class AwsKmsVault:
    """KeyVault + KeyManager (where KMS allows) over boto3."""

    kind = KIND

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        *,
        soft_delete_days: int | None = None,
        purge_protection: bool = False,
        client: Any = None,
    ) -> None:
        self.name = name
        self.config = validate_config(config)
        self.soft_delete_days = soft_delete_days
        self.purge_protection = purge_protection
        self._client = client
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import boto3
                    from botocore.config import Config
                except ImportError:
                    raise VaultLocalError(
                        "boto3 is not installed in this process; install it to use aws-kms vaults",
                        code="vault_client_missing",
                    ) from None

                cfg = Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=10,
                )
                self._client = boto3.session.Session().client(
                    "kms",
                    region_name=self.config["region"],
                    endpoint_url=self.config.get("endpoint_url"),
                    config=cfg,
                )
            return self._client

    def _call(self, op: str, what: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        try:
            return getattr(self.client, op)(**kwargs)
        except ClientError as exc:
            raise _map_client_error(exc, what) from None
        except NoCredentialsError:
            raise VaultLocalError(
                f"aws-kms vault {self.name}: this process has no AWS credentials; configure them for "
                "every Keyshift process (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an "
                "instance role)",
                code="vault_credentials_missing",
            ) from None
        except (BotoConnectionError, HTTPClientError) as exc:  # refused, timeouts, DNS, TLS
            raise VaultUnavailableError(
                f"aws-kms vault {self.name} unreachable: {type(exc).__name__}"
            ) from None
        except BotoCoreError as exc:  # configuration of this process (profile, region, params)
            raise VaultLocalError(
                f"aws-kms vault {self.name}: the AWS client of this process failed "
                f"({type(exc).__name__}); check its AWS configuration (profile, credentials, region)",
                code="vault_client_error",
            ) from None

    def _meta(self, name: str) -> dict[str, Any]:
        return self._call("describe_key", f"key {name}", KeyId=key_id_for(name))["KeyMetadata"]  # type: ignore[no-any-return]

    def _usable(self, meta: Mapping[str, Any], label: str) -> None:
        state = meta.get("KeyState")
        if state == "PendingDeletion" or meta.get("DeletionDate") is not None:
            raise KeyDeletedError(f"key {label} is scheduled for deletion")
        if state in ("Disabled",) or not meta.get("Enabled", False):
            raise KeyDisabledError(f"key {label} is disabled")
        if state == "PendingImport":
            raise KeyDisabledError(f"key {label} has no key material yet")
        if state == "Unavailable":
            raise VaultUnavailableError(f"key {label} is unavailable (its key store is disconnected)")
        if (
            meta.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT"
            or meta.get("KeySpec", "SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT"
        ):
            raise UsageError(f"key {label} is not a symmetric encryption key")

    # -- KeyVault ---------------------------------------------------------------------------------
    def info(self) -> VaultInfo:
        def probe() -> str:
            self._call("list_keys", "vault", Limit=1)
            return f"reachable (region {self.config['region']})"

        return declared_info(
            self.name,
            KIND,
            self.config,
            self.soft_delete_days,
            self.purge_protection,
            symmetric_only=True,
            native_aes=True,
            probe=probe,
        )

    def describe(self, key: KeyRef) -> KeyInfo:
        meta = self._meta(key.name)
        return self._info_from(key.name, meta)

    def _info_from(self, name: str, meta: Mapping[str, Any]) -> KeyInfo:
        state = meta.get("KeyState")
        enabled = bool(meta.get("Enabled")) and state == "Enabled"
        version = str(meta["KeyId"])
        expires = meta.get("ValidTo")
        created = meta.get("CreationDate")
        return KeyInfo(
            ref=KeyRef(self.name, name, version),
            key_type=KeyType.AES,
            size=256,
            enabled=enabled,
            current_version=version,
            versions=(
                KeyVersionInfo(
                    version=version,
                    enabled=enabled,
                    expires=expires if isinstance(expires, datetime) else None,
                    created_at=created if isinstance(created, datetime) else None,
                ),
            ),
            deleted=state == "PendingDeletion",
            purge_after=meta.get("DeletionDate"),
        )

    def wrap(
        self, key: KeyRef, dek: bytes, *, identity: str, context: Mapping[str, str] | None = None
    ) -> WrappedKey:
        dek = check_dek(dek)
        ctx = _context(context)
        meta = self._meta(key.version or key.name)
        self._usable(meta, str(key))
        key_id = str(meta["KeyId"])
        if key.version is not None and key.version != key_id:
            raise KeyNotFoundError(f"key {key} has no version {key.version!r}")
        out = self._call("encrypt", f"key {key}", KeyId=key_id, Plaintext=dek, EncryptionContext=ctx)
        blob = out.get("CiphertextBlob")
        if not isinstance(blob, bytes) or not blob:
            raise VaultUnavailableError(f"aws-kms vault {self.name} returned no ciphertext")
        return WrappedKey(
            key=KeyRef(self.name, key.name, key_id),
            algorithm=ALGORITHM,
            ciphertext=blob,
            meta={"key_arn": str(meta.get("Arn", ""))},
        )

    def unwrap(
        self, wrapped: WrappedKey, *, identity: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        if wrapped.algorithm != ALGORITHM or wrapped.key.version is None:
            raise UnwrapError("wrapped key was not made by an aws-kms vault")
        if not 1 <= len(wrapped.ciphertext) <= MAX_CIPHERTEXT:
            raise UnwrapError("wrapped key has an invalid length")
        ctx = _context(context)
        meta = self._meta(wrapped.key.version)
        self._usable(meta, str(wrapped.key))
        out = self._call(
            "decrypt",
            f"key {wrapped.key}",
            CiphertextBlob=bytes(wrapped.ciphertext),
            KeyId=str(meta["KeyId"]),
            EncryptionContext=ctx,
        )
        if out.get("KeyId") not in (None, meta["KeyId"], meta.get("Arn")):
            raise UnwrapError("wrapped key was made under another key")
        plain = out.get("Plaintext")
        if not isinstance(plain, bytes):
            raise VaultUnavailableError(f"aws-kms vault {self.name} returned no plaintext")
        return plain

    def check_access(self, key: KeyRef, identity: str) -> frozenset[Permission]:
        meta = self._meta(key.version or key.name)
        perms = {Permission.GET}
        try:
            self._usable(meta, str(key))
        except KeyshiftError:
            return frozenset(perms)
        return frozenset(perms | {Permission.WRAP, Permission.UNWRAP})

    # -- KeyManager ---------------------------------------------------------------------------------
    def create_key(
        self,
        name: str,
        key_type: KeyType,
        size: int,
        *,
        not_before: datetime | None = None,
        expires: datetime | None = None,
    ) -> KeyInfo:
        if key_type != KeyType.AES or size != 256:
            raise unsupported(KIND, f"{key_type} {size} keys", "Keyshift uses symmetric KMS keys (AES-256)")
        if not_before is not None or expires is not None:
            raise unsupported(KIND, "not-before/expiry dates")
        alias = _alias(name)
        try:
            self._meta(alias)
        except KeyNotFoundError:
            pass
        else:
            from keyshift.errors import AlreadyExistsError

            raise AlreadyExistsError(f"key {name!r} already exists in vault {self.name}", code="key_exists")
        key_id = self._new_key(name)
        self._call("create_alias", f"key {name}", AliasName=alias, TargetKeyId=key_id)
        return self.describe(KeyRef(self.name, name))

    def _new_key(self, name: str) -> str:
        meta = self._call(
            "create_key",
            f"key {name}",
            KeySpec="SYMMETRIC_DEFAULT",
            KeyUsage="ENCRYPT_DECRYPT",
            Description=f"keyshift key {name}",
        )["KeyMetadata"]
        return str(meta["KeyId"])

    def rotate_key(self, name: str) -> KeyInfo:
        """New version = a new KMS key behind the same alias (old key ids stay usable for unwrap)."""
        if not key_id_for(name).startswith("alias/"):
            raise unsupported(
                KIND,
                "rotating a key named by key id/ARN",
                "name it by alias; KMS automatic rotation needs no rewrap",
            )
        self._meta(name)  # must exist
        key_id = self._new_key(name)
        self._call("update_alias", f"key {name}", AliasName=key_id_for(name), TargetKeyId=key_id)
        return self.describe(KeyRef(self.name, name))

    def set_enabled(self, name: str, enabled: bool, *, version: str | None = None) -> KeyInfo:
        meta = self._meta(version or name)
        if meta.get("KeyState") == "PendingDeletion":
            raise KeyDeletedError(f"key {self.name}/{name} is scheduled for deletion; recover it first")
        self._call("enable_key" if enabled else "disable_key", f"key {name}", KeyId=str(meta["KeyId"]))
        return self.describe(KeyRef(self.name, name))

    def delete_key(self, name: str) -> KeyInfo:
        meta = self._meta(name)
        days = self.soft_delete_days if self.soft_delete_days and 7 <= self.soft_delete_days <= 30 else 30
        self._call("schedule_key_deletion", f"key {name}", KeyId=str(meta["KeyId"]), PendingWindowInDays=days)
        return self.describe(KeyRef(self.name, name))

    def recover_key(self, name: str) -> KeyInfo:
        meta = self._meta(name)
        self._call("cancel_key_deletion", f"key {name}", KeyId=str(meta["KeyId"]))
        self._call("enable_key", f"key {name}", KeyId=str(meta["KeyId"]))
        return self.describe(KeyRef(self.name, name))

    def purge_key(self, name: str) -> None:
        raise unsupported(KIND, "purge", "KMS deletes a key only when its scheduled deletion date passes")

    def grant(self, name: str, identity: str, permissions: frozenset[Permission]) -> None:
        raise unsupported(KIND, "grants", "access is decided by IAM and the key policy of the AWS principal")

    def revoke_grant(self, name: str, identity: str) -> None:
        raise unsupported(KIND, "grants", "access is decided by IAM and the key policy of the AWS principal")

    def list_keys(self) -> list[KeyInfo]:
        out: list[KeyInfo] = []
        marker: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Limit": 100}
            if marker:
                kwargs["Marker"] = marker
            page = self._call("list_aliases", "vault", **kwargs)
            for alias in page.get("Aliases", []):
                name = str(alias.get("AliasName", ""))
                if (
                    not name.startswith("alias/")
                    or name.startswith("alias/aws/")
                    or not alias.get("TargetKeyId")
                ):
                    continue
                short = name[len("alias/") :]
                try:
                    out.append(self._info_from(short, self._meta(name)))
                except KeyNotFoundError:
                    continue
            if not page.get("Truncated"):
                return out
            marker = page.get("NextMarker")


def _alias(name: str) -> str:
    alias = key_id_for(name)
    if (
        not alias.startswith("alias/")
        or not re.match(r"^alias/[A-Za-z0-9/_-]{1,250}$", alias)
        or alias.startswith("alias/aws/")
    ):
        raise UsageError(f"aws-kms key name {name!r} cannot be used as an alias")
    return alias


def _context(context: Mapping[str, str] | None) -> dict[str, str]:
    canonical_context(context)  # validates types
    return dict(context or {})


def _map_client_error(exc: Any, what: str) -> KeyshiftError:
    err = exc.response.get("Error", {}) if hasattr(exc, "response") else {}
    code = str(err.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _THROTTLE or status == 429:
        return ThrottledError(f"aws-kms throttled the request for {what}")
    if code == "NotFoundException":
        return KeyNotFoundError(f"{what} not found in the vault")
    if code == "DisabledException":
        return KeyDisabledError(f"{what} is disabled")
    if code == "KMSInvalidStateException":
        return KeyDisabledError(f"{what} is not in a usable state")
    if code in _BAD_CREDENTIALS:
        return VaultLocalError(
            f"aws-kms did not accept this process's AWS credentials for {what} ({code}); fix or "
            "renew the credentials of this process",
            code="vault_credentials_rejected",
        )
    if code in _DENIED or status == 403:
        return AccessDeniedError(f"aws-kms denied access to {what}")
    if code in _BAD_CIPHERTEXT:
        return UnwrapError("wrapped key failed to unwrap")
    if code in _UNAVAILABLE or status >= 500:
        return VaultUnavailableError(f"aws-kms unavailable for {what} ({code or status})")
    if code in ("ValidationException", "InvalidKeyUsageException", "InvalidArnException"):
        return UsageError(f"aws-kms rejected the request for {what}: {code}")
    if code == "AlreadyExistsException":
        from keyshift.errors import AlreadyExistsError

        return AlreadyExistsError(f"{what} already exists", code="key_exists")
    # An answer we do not know: not proof that the key owner refused it, so never a revocation.
    return VaultLocalError(
        f"aws-kms answered the request for {what} with {code or status}, which Keyshift does not "
        "recognise; check the vault's endpoint and the AWS client of this process",
        code="vault_client_error",
    )


def open_aws_kms_vault(rt: Runtime, record: VaultRecord) -> AwsKmsVault:
    return AwsKmsVault(
        record.name,
        record.config or {},
        soft_delete_days=record.soft_delete_days,
        purge_protection=bool(record.purge_protection),
    )
