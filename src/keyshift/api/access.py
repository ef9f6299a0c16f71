"""Authorization: who may call which route on which object.

Every route declares exactly one `Rule` through `allow(...)` — a FastAPI dependency that
authenticates the caller, checks the role against the rule, resolves the object named in the path
to its tenant (and environment) and refuses anything outside the caller's scope. Objects of another
tenant answer exactly like objects that do not exist (404, same code and message), so a tenant admin
learns nothing about other tenants. References inside request bodies are checked by the route with
`Ctx.tenant_of_*` / `Ctx.require_*`, which apply the same rule.

Roles:
  operator      everything, including operator-only actions (tenants, BYOK flag, tokens).
  tenant_admin  control plane of its own tenant: environments, policies, vaults, jobs, audit trail.
  service       data plane of the environments granted to the token, nothing else.
  reader        read-only control plane (of its tenant when the token has one); no data plane.

Scope "env_data" is the one meeting point: reading an environment's feature data (search) is open
to its tenant's admins and readers and to service tokens granted the environment; never a write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from sqlalchemy import select

from keyshift.control import tokens
from keyshift.control.common import get_environment, get_policy, get_tenant, get_vault_record
from keyshift.control.tokens import Principal
from keyshift.errors import NotFoundError, PermissionDeniedError, UsageError
from keyshift.runtime import Runtime

# Rule scopes and the path parameter that names their object.
SCOPE_PARAMS: dict[str, str | None] = {
    "public": None,  # no authentication (login page, static assets)
    "authenticated": None,  # any valid principal (who am I)
    "operator": None,  # operator only
    "collection": None,  # lists and creates; the route filters by ctx.tenant_filter / checks bodies
    "tenant": "tenant",
    "env": "env",
    "policy": "policy",
    "vault": "vault",
    "job": "job",
    "data": "env",  # data plane of one environment
    "env_data": "env",  # read of one environment's feature data: control-plane readers and its services
}

CONTROL_SCOPES = {"collection", "tenant", "env", "policy", "vault", "job", "env_data"}
# Scopes a service token may reach (the environment must be among its grants).
DATA_SCOPES = {"data", "env_data"}


@dataclass(frozen=True)
class Rule:
    scope: str
    write: bool = False

    def __post_init__(self) -> None:
        if self.scope not in SCOPE_PARAMS:
            raise ValueError(f"unknown access scope {self.scope!r}")

    @property
    def param(self) -> str | None:
        return SCOPE_PARAMS[self.scope]


def _not_found(kind: str, ref: str) -> NotFoundError:
    # Same message and code as the control plane's own lookups (control.common._one).
    return NotFoundError(f"{kind} {ref!r} not found", code=f"{kind}_not_found")


@dataclass
class Ctx:
    """What a route gets: the runtime acting for the caller, the principal, the rule it passed."""

    rt: Runtime
    principal: Principal | None
    rule: Rule
    # Tenant of the last object resolved in scope (tags the request's audit record).
    object_tenant: str | None = None

    @property
    def tenant_filter(self) -> str | None:
        """The tenant id every listing must be limited to (None: the caller sees all tenants)."""
        return self.principal.tenant_id if self.principal else None

    @property
    def is_operator(self) -> bool:
        return self.principal is not None and self.principal.role == "operator"

    # -- resolving objects to their tenant ----------------------------------------------------
    def _in_scope(self, tenant_id: str | None, kind: str, ref: str) -> None:
        self._check_scope(tenant_id, kind, ref)
        self.object_tenant = tenant_id

    def _check_scope(self, tenant_id: str | None, kind: str, ref: str) -> None:
        p = self.principal
        if p is None or p.role in ("operator", "service"):
            return  # a service token is scoped by its environment grants (require_env)
        if p.tenant_id is None and p.role == "reader":
            return
        if tenant_id is None or tenant_id != p.tenant_id:
            raise _not_found(kind, ref)

    def require_tenant(self, ref: str) -> str:
        with self.rt.transaction() as s:
            try:
                tid = get_tenant(s, ref).id
            except NotFoundError:
                raise _not_found("tenant", ref) from None
        self._in_scope(tid, "tenant", ref)
        return tid

    def require_env(self, ref: str) -> tuple[str, str]:
        """(environment id, tenant id) of an environment the caller may address."""
        with self.rt.transaction() as s:
            try:
                env = get_environment(s, ref)
            except NotFoundError:
                raise _not_found("environment", ref) from None
            env_id, tid = env.id, env.tenant_id
        self._in_scope(tid, "environment", ref)
        p = self.principal
        if p is not None and p.role == "service" and env_id not in p.env_ids:
            raise _not_found("environment", ref)
        return env_id, tid

    def require_policy(self, ref: str) -> str:
        with self.rt.transaction() as s:
            try:
                pol = get_policy(s, ref)
            except NotFoundError:
                raise _not_found("policy", ref) from None
            pid, tid = pol.id, pol.tenant_id
        self._in_scope(tid, "policy", ref)
        return pid

    def require_vault(self, ref: str) -> str:
        with self.rt.transaction() as s:
            try:
                v = get_vault_record(s, ref)
            except NotFoundError:
                raise _not_found("vault", ref) from None
            vid, tid, owner = v.id, v.tenant_id, v.owner
        # Platform-owned vaults (platform key, legacy BYOK vaults) are the operator's.
        self._in_scope(tid if owner == "customer" else None, "vault", ref)
        return vid

    def require_job(self, ref: str) -> str:
        from keyshift.db.models.jobs import Job

        with self.rt.transaction() as s:
            job = s.scalars(select(Job).where(Job.id == ref)).first()
            if job is None:
                raise _not_found("job", ref)
            jid, tid = job.id, job.tenant_id
        self._in_scope(tid, "job", ref)
        return jid

    def require_backup(self, ref: str) -> str:
        """A backup id named next to an environment: another tenant's backup answers as missing."""
        from keyshift.db.models.features import Backup

        with self.rt.transaction() as s:
            b = s.get(Backup, ref) if len(ref) <= 40 else None
            tid = b.tenant_id if b is not None else None
        try:
            self._check_scope(tid, "backup", ref)
        except NotFoundError:
            raise NotFoundError(f"backup {ref!r} not found", code="backup_not_found") from None
        return ref


_RESOLVERS: dict[str, Callable[[Ctx, str], Any]] = {
    "tenant": Ctx.require_tenant,
    "env": Ctx.require_env,
    "data": Ctx.require_env,
    "env_data": Ctx.require_env,
    "policy": Ctx.require_policy,
    "vault": Ctx.require_vault,
    "job": Ctx.require_job,
}


def _role_allows(p: Principal, rule: Rule) -> bool:
    if p.role == "operator":
        return True
    if rule.scope == "authenticated":
        return True
    if p.role == "service":
        return rule.scope == "data" or (rule.scope in DATA_SCOPES and not rule.write)
    if p.role == "reader":
        return not rule.write and rule.scope in CONTROL_SCOPES
    if p.role == "tenant_admin":
        # Tenants themselves are read-only for their admins (the BYOK flag is the operator's).
        return rule.scope in CONTROL_SCOPES and not (rule.scope == "tenant" and rule.write)
    return False


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""
    return None


def _refuse_nul(request: Request) -> None:
    """No name, id or path anywhere contains NUL: refuse it before it reaches a database."""
    values = [*request.path_params.values(), *request.query_params.values()]
    if any("\x00" in str(v) for v in values):
        raise UsageError("names, ids and paths must not contain NUL characters", code="invalid_argument")


class Guard:
    """The dependency behind `allow(...)`; the route test finds it on every route."""

    def __init__(self, rule: Rule, token_source: Callable[[Request], str | None] | None = None) -> None:
        self.rule = rule
        self.token_source = token_source or presented_token

    def __call__(self, request: Request) -> Ctx:
        base: Runtime = request.app.state.runtime
        _refuse_nul(request)
        if self.rule.scope == "public":
            return Ctx(base.with_principal("anonymous"), None, self.rule)
        principal = tokens.authenticate(base, self.token_source(request))
        request.state.principal = principal.label
        if principal.tenant_id is not None:
            request.state.tenant_id = principal.tenant_id
        ctx = Ctx(base.with_principal(principal.label), principal, self.rule)
        if not _role_allows(principal, self.rule):
            raise PermissionDeniedError(
                f"role {principal.role} may not {'change' if self.rule.write else 'read'} this resource"
            )
        param = self.rule.param
        if param is not None:
            ref = request.path_params.get(param)
            if ref is None:  # pragma: no cover - a route declared a scope without its parameter
                raise PermissionDeniedError("route has no object to authorize")
            _RESOLVERS[self.rule.scope](ctx, ref)
        if principal.tenant_id is None and ctx.object_tenant is not None:
            request.state.tenant_id = ctx.object_tenant  # operator / global reader on a tenant's object
        return ctx


def allow(
    scope: str, *, write: bool = False, token_source: Callable[[Request], str | None] | None = None
) -> Any:
    """`ctx: Ctx = allow("env", write=True)` — the one authorization declaration of a route."""
    return Depends(Guard(Rule(scope, write), token_source))


def guards_of(route: Any) -> list[Guard]:
    """Every Guard in a route's dependency tree (for the every-route authorization test)."""
    out: list[Guard] = []
    stack = [getattr(route, "dependant", None)]
    while stack:
        dep = stack.pop()
        if dep is None:
            continue
        if isinstance(dep.call, Guard):
            out.append(dep.call)
        stack.extend(dep.dependencies)
    return out
