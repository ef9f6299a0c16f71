"""Can this process open every vault it will need? Checked when `serve` and `worker` start.

Vault connection settings (PINs, credentials, client certificates, PKCS#11 modules and their
config files) belong to each process's deployment. A process that lacks them must say so loudly
when it starts — not fail customers' requests later. `check_vaults(rt)` opens a FRESH adapter of
every vault that holds a key in use (an environment's binding, a current DEK wrap, a linked
policy) and describes each such key; `warn(rt, stream)` prints one line per problem. Nothing is
stored: a process's own setup never changes shared state.
"""

from __future__ import annotations

from typing import IO, Any

from sqlalchemy import select

from keyshift.db.models import Dek, DekWrap, Environment, Policy, VaultRecord
from keyshift.errors import KeyshiftError
from keyshift.runtime import Runtime
from keyshift.vaults.base import KeyRef, outcome_of
from keyshift.vaults.registry import factory_for


def keys_in_use(rt: Runtime) -> dict[str, set[str]]:
    """vault id -> key names this deployment needs (bindings, current DEK wraps, linked policies)."""
    out: dict[str, set[str]] = {}
    with rt.transaction() as s:
        live = Environment.state != "deleted"
        rows = list(
            s.execute(
                select(Environment.kek_vault_id, Environment.kek_key_name).where(
                    live, Environment.kek_vault_id.is_not(None)
                )
            )
        )
        rows += list(
            s.execute(
                select(DekWrap.vault_id, DekWrap.key_name)
                .join(Dek, Dek.id == DekWrap.dek_id)
                .join(Environment, Environment.id == Dek.environment_id)
                .where(live, Dek.state != "destroyed", DekWrap.state == "current")
                .distinct()
            )
        )
        rows += list(
            s.execute(
                select(Policy.vault_id, Policy.key_name)
                .join(Environment, Environment.policy_id == Policy.id)
                .where(live, Policy.state != "deleted")
                .distinct()
            )
        )
    for vault_id, key_name in rows:
        if vault_id and key_name:
            out.setdefault(vault_id, set()).add(key_name)
    return out


def check_vaults(rt: Runtime) -> list[dict[str, Any]]:
    """One entry per vault in use: {vault, kind, ok, keys, problems: [{key, code, outcome, message}]}."""
    results: list[dict[str, Any]] = []
    for vault_id, names in sorted(keys_in_use(rt).items()):
        with rt.transaction() as s:
            rec = s.get(VaultRecord, vault_id)
            if rec is None:
                continue
            s.expunge(rec)
        entry: dict[str, Any] = {"vault": rec.name, "kind": rec.kind, "keys": sorted(names), "problems": []}
        vault: Any = None
        try:
            vault = factory_for(rec.kind)(rt, rec)  # a fresh adapter: its own session/connection
            for name in sorted(names):
                try:
                    vault.describe(KeyRef(vault.name, name))
                except KeyshiftError as err:
                    entry["problems"].append(_problem(name, err))
                    if outcome_of(err) != "refused":
                        break  # the vault itself cannot be used from here: one line is enough
        except KeyshiftError as err:
            entry["problems"].append(_problem(None, err))
        except Exception as exc:  # a client library failing to load: still only a warning
            entry["problems"].append(
                {"key": None, "code": "vault_client_error", "outcome": "local", "message": type(exc).__name__}
            )
        finally:
            closer = getattr(vault, "close", None)
            if callable(closer):
                closer()
        entry["ok"] = not entry["problems"]
        results.append(entry)
    return results


def _problem(key: str | None, err: KeyshiftError) -> dict[str, Any]:
    return {"key": key, "code": err.code, "outcome": outcome_of(err), "message": err.message}


def warn(rt: Runtime, stream: IO[str], *, role: str) -> bool:
    """Check the vaults and print a loud warning per problem on `stream`. True when all are usable."""
    results = check_vaults(rt)
    ok = True
    for r in results:
        for p in r["problems"]:
            ok = False
            what = f"key {p['key']}" if p["key"] else "the vault"
            stream.write(
                f"WARNING: keyshift {role}: vault {r['vault']!r} ({r['kind']}): {what} cannot be used "
                f"by this process [{p['outcome'] or 'error'}: {p['code']}]: {p['message']}\n"
            )
    if not ok:
        stream.write(
            f"WARNING: keyshift {role}: requests that need these vaults will fail in this process (exit 6 / "
            "HTTP 503) until fixed; no environment is disabled because of it. See docs/VAULTS.md, "
            "'Deploying vault connection settings'.\n"
        )
    return ok
