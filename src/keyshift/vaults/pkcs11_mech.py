"""PKCS#11 wrapping mechanisms for the `pkcs11` vault, and token errors -> typed vault errors.

- AES: the token's key wrap, RFC 5649 (CKM_AES_KEY_WRAP_PAD) when available, else RFC 3394
  (CKM_AES_KEY_WRAP). The DEK becomes a non-persistent, extractable session object that is wrapped
  and destroyed; unwrap imports into such an object, reads its value back and destroys it.
- RSA: OAEP with SHA-256/MGF1-SHA-256 when the token accepts it, else SHA-1/MGF1-SHA-1 (SoftHSM2
  2.6), recorded as ``RSA-OAEP-256`` / ``RSA-OAEP``. C_Encrypt/C_Decrypt when the key allows them,
  else C_WrapKey/C_UnwrapKey of a session object (key-transport keys).

Every integrity failure is one opaque UnwrapError. Functions take python-pkcs11 objects; the import
of python-pkcs11 happens on first use (extra 'hsm').
"""

from __future__ import annotations

import os
from typing import Any

from keyshift.errors import ConflictError, KeyshiftError, UsageError, VaultUnavailableError
from keyshift.vaults.base import (
    AccessDeniedError,
    KeyDisabledError,
    KeyNotFoundError,
    UnwrapError,
    VaultLocalError,
)

ALG_KWP, ALG_KW = "AES-KWP", "AES-KW"
ALG_OAEP256, ALG_OAEP1 = "RSA-OAEP-256", "RSA-OAEP"
AES_ALGS = (ALG_KWP, ALG_KW)
RSA_ALGS = (ALG_OAEP256, ALG_OAEP1)


def has(obj: Any, attribute: Any) -> bool:
    """A boolean attribute of a token object (False when absent or unreadable)."""
    try:
        return bool(obj[attribute])
    except Exception:
        return False


def _session_secret(session: Any, value: bytes) -> Any:
    from pkcs11 import Attribute, ObjectClass
    from pkcs11 import KeyType as P11KeyType

    return session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: P11KeyType.GENERIC_SECRET,
            Attribute.VALUE: value,
            Attribute.TOKEN: False,
            Attribute.EXTRACTABLE: True,
            Attribute.SENSITIVE: False,
        }
    )


def _read_and_destroy(obj: Any) -> bytes:
    from pkcs11 import Attribute

    try:
        return bytes(obj[Attribute.VALUE])
    finally:
        obj.destroy()


def _unwrap_failures() -> tuple[type[Exception], ...]:
    import pkcs11

    # SoftHSM2 answers CKR_GENERAL_ERROR when an RFC 3394/5649 integrity check or OAEP decoding
    # fails, and CKR_ARGUMENTS_BAD for an OAEP hash it does not support (a record claiming another).
    return (
        pkcs11.WrappedKeyInvalid,
        pkcs11.WrappedKeyLenRange,
        pkcs11.EncryptedDataInvalid,
        pkcs11.EncryptedDataLenRange,
        pkcs11.DataInvalid,
        pkcs11.DataLenRange,
        pkcs11.TemplateInconsistent,
        pkcs11.FunctionFailed,
        pkcs11.GeneralError,
        pkcs11.ArgumentsBad,
        pkcs11.MechanismParamInvalid,
    )


# -- AES key wrap -----------------------------------------------------------------------------------


def aes_algorithm(session: Any) -> str:
    """RFC 5649 if the token has it, else RFC 3394."""
    from pkcs11 import Mechanism

    mechs = session.token.slot.get_mechanisms()
    if Mechanism.AES_KEY_WRAP_PAD in mechs:
        return ALG_KWP
    if Mechanism.AES_KEY_WRAP in mechs:
        return ALG_KW
    raise ConflictError(
        "AES key wrap is not supported by vault kind pkcs11 on this token "
        "(neither CKM_AES_KEY_WRAP_PAD nor CKM_AES_KEY_WRAP)",
        code="not_supported",
    )


def _aes_mechanism(alg: str) -> Any:
    from pkcs11 import Mechanism

    return Mechanism.AES_KEY_WRAP_PAD if alg == ALG_KWP else Mechanism.AES_KEY_WRAP


def aes_wrap(session: Any, kek: Any, dek: bytes, alg: str) -> bytes:
    if alg == ALG_KW and len(dek) % 8:
        raise UsageError("RFC 3394 key wrap needs a DEK whose length is a multiple of 8")
    tmp = _session_secret(session, dek)
    try:
        return bytes(kek.wrap_key(tmp, mechanism=_aes_mechanism(alg)))
    finally:
        tmp.destroy()


def aes_unwrap(kek: Any, ciphertext: bytes, alg: str) -> bytes:
    from pkcs11 import Attribute, ObjectClass
    from pkcs11 import KeyType as P11KeyType

    try:
        obj = kek.unwrap_key(
            ObjectClass.SECRET_KEY,
            P11KeyType.GENERIC_SECRET,
            bytes(ciphertext),
            mechanism=_aes_mechanism(alg),
            store=False,
            template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False, Attribute.TOKEN: False},
        )
    except _unwrap_failures():
        raise UnwrapError("wrapped key failed to unwrap") from None
    return _read_and_destroy(obj)


# -- RSA OAEP ---------------------------------------------------------------------------------------


def oaep_params(alg: str) -> tuple[Any, Any, None]:
    from pkcs11 import MGF, Mechanism

    if alg == ALG_OAEP256:
        return (Mechanism.SHA256, MGF.SHA256, None)
    return (Mechanism.SHA_1, MGF.SHA1, None)


def oaep_wrap(session: Any, pub: Any, dek: bytes, alg: str) -> bytes:
    """C_Encrypt when the public key allows it, else C_WrapKey of a session copy of the DEK."""
    from pkcs11 import Attribute, Mechanism

    params = oaep_params(alg)
    if has(pub, Attribute.ENCRYPT):
        return bytes(pub.encrypt(dek, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=params))
    tmp = _session_secret(session, dek)
    try:
        return bytes(pub.wrap_key(tmp, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=params))
    finally:
        tmp.destroy()


def probe_oaep(session: Any, pub: Any) -> str:
    """SHA-256 OAEP if the token accepts it for this key, else SHA-1."""
    import pkcs11

    try:
        oaep_wrap(session, pub, os.urandom(32), ALG_OAEP256)
        return ALG_OAEP256
    except (
        pkcs11.ArgumentsBad,
        pkcs11.MechanismParamInvalid,
        pkcs11.MechanismInvalid,
        pkcs11.FunctionFailed,
    ):
        return ALG_OAEP1


def oaep_unwrap(priv: Any, ciphertext: bytes, alg: str) -> bytes:
    """C_Decrypt when the private key allows it, else C_UnwrapKey into a session object."""
    from pkcs11 import Attribute, Mechanism, ObjectClass
    from pkcs11 import KeyType as P11KeyType

    params = oaep_params(alg)
    try:
        if has(priv, Attribute.DECRYPT):
            return bytes(
                priv.decrypt(bytes(ciphertext), mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=params)
            )
        obj = priv.unwrap_key(
            ObjectClass.SECRET_KEY,
            P11KeyType.GENERIC_SECRET,
            bytes(ciphertext),
            mechanism=Mechanism.RSA_PKCS_OAEP,
            mechanism_param=params,
            store=False,
            template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False, Attribute.TOKEN: False},
        )
    except _unwrap_failures():
        raise UnwrapError("wrapped key failed to unwrap") from None
    return _read_and_destroy(obj)


# -- errors -----------------------------------------------------------------------------------------


def map_error(exc: Exception, what: str) -> KeyshiftError:
    """A python-pkcs11 error (outside the unwrap integrity checks) -> a typed vault error."""
    import pkcs11

    name = type(exc).__name__
    if isinstance(exc, pkcs11.NoSuchKey | pkcs11.KeyHandleInvalid | pkcs11.ObjectHandleInvalid):
        return KeyNotFoundError(f"{what} not found")
    if "0x68" in str(exc) or "KeyFunctionNotPermitted" in name:  # CKR_KEY_FUNCTION_NOT_PERMITTED
        return KeyDisabledError(f"{what} is disabled on the token")
    if isinstance(exc, pkcs11.PinIncorrect | pkcs11.PinLocked | pkcs11.UserNotLoggedIn):
        return VaultLocalError(
            f"the token refused this process's login for {what} ({name}); fix the vault's PIN",
            code="vault_login_failed",
        )
    if isinstance(exc, pkcs11.AttributeReadOnly | pkcs11.TokenWriteProtected | pkcs11.SessionReadOnly):
        return AccessDeniedError(f"the token does not allow this change to {what}")
    if isinstance(exc, pkcs11.MechanismInvalid | pkcs11.MechanismParamInvalid | pkcs11.KeyTypeInconsistent):
        return ConflictError(
            f"the token cannot perform this operation on {what} ({name})", code="not_supported"
        )
    return VaultUnavailableError(f"token error for {what} ({name})")
