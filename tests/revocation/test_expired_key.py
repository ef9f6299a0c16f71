"""The way out of an expired key, end to end through the CLI with the fake clock (KEYSHIFT_NOW):
the environment is disabled when its key version expires; the customer's admin either extends the
expiry (`key update --expires`) or rotates the key (`key rotate`), then `env re-enable` works and
the data reads back. Bad input to `key update` is refused with a typed error and changes nothing."""

from __future__ import annotations

from datetime import timedelta

from keyshift.control import vaults
from keyshift.timefmt import iso_z

from .helpers import KEY, VAULT, Cli, audit_actions, cmk_world, env_row, read_all, snapshot


def _expire(rt, clock, cli, world):  # type: ignore[no-untyped-def]
    clock.advance(days=61)  # the key expires 60 days after the world was made
    out = cli("maintenance", "run")
    assert out["health"], out
    eid = world.envs["contoso-prod"]
    assert env_row(rt, eid).state == "disabled"
    assert cli("data", "get", "contoso-prod", "t", "r00001", code=7)["code"] == "environment_disabled"
    return eid


def test_extend_the_expiry_then_re_enable(rt, clock, home, db_url):  # type: ignore[no-untyped-def]
    world = cmk_world(rt, key_expires=clock.now() + timedelta(days=60))
    before = read_all(rt, world.envs["contoso-prod"])
    cli = Cli(home, db_url, clock)
    eid = _expire(rt, clock, cli, world)
    assert cli("env", "re-enable", "contoso-prod", code=6)["code"] == "key_inaccessible"

    new_expiry = (clock.now() + timedelta(days=365)).replace(microsecond=0)
    out = cli("key", "update", VAULT, KEY, "--expires", new_expiry.isoformat())
    assert out["versions"][0]["expires"] == iso_z(new_expiry)
    update = [(o, r) for a, o, r in audit_actions(rt, f"{VAULT}/{KEY}") if a == "key.update"]
    assert update == [("ok", None)]
    assert cli("env", "re-enable", "contoso-prod")["state"] == "enabled"
    assert read_all(rt, eid) == before
    cli("data", "put", "contoso-prod", "t", "after", '{"n": 1}')

    # `never` clears the expiry
    out = cli("key", "update", VAULT, KEY, "--expires", "never", "--version", "1")
    assert out["versions"][0]["expires"] is None


def test_rotate_an_expired_key_then_re_enable(rt, clock, home, db_url):  # type: ignore[no-untyped-def]
    world = cmk_world(rt, key_expires=clock.now() + timedelta(days=60))
    eid = world.envs["contoso-prod"]
    before = read_all(rt, eid)
    cli = Cli(home, db_url, clock)
    _expire(rt, clock, cli, world)
    out = cli("key", "rotate", VAULT, KEY)
    assert out["current_version"] == "2" and out["versions"][1]["expires"] is None
    view = cli("env", "re-enable", "contoso-prod")
    assert view["state"] == "enabled"
    assert read_all(rt, eid) == before
    # The rotation is picked up (rewrap under version 2) by the next health check / maintenance run.
    # (exit 4: version 1, expired, still wraps the data until that rewrap ends: a warning)
    jobs = cli("policy", "health", world.policy, code=4, printed=True)["rotate_jobs"]
    assert len(jobs) == 1
    assert cli("job", "wait", jobs[0])["state"] == "succeeded"
    assert env_row(rt, eid).kek_key_version == "2"
    cli("data", "put", "contoso-prod", "t", "after", '{"n": 1}')
    assert read_all(rt, eid) == {**before, "after": {"n": 1}}
    # The expired version 1 only unwraps now: wrapping under it stays refused.
    from keyshift.errors import KeyInaccessibleError
    from keyshift.vaults.base import KeyRef

    vault = rt.vault(VAULT)
    try:
        vault.wrap(KeyRef(VAULT, KEY, "1"), b"\x00" * 32, identity=world.identity)
        raise AssertionError("an expired version wrapped")
    except KeyInaccessibleError as err:
        assert err.code == "key_expired"


def test_key_update_bad_input_changes_nothing(rt, clock, home, db_url):  # type: ignore[no-untyped-def]
    world = cmk_world(rt, key_expires=clock.now() + timedelta(days=60))
    del world
    cli = Cli(home, db_url, clock)
    vaults.create_key(rt, VAULT, "gone", "AES", 256)
    vaults.delete_key(rt, VAULT, "gone")
    vaults.create_key(rt, VAULT, "later", "AES", 256, not_before=clock.now() + timedelta(days=10))
    state0 = snapshot(rt), vaults.show_key(rt, VAULT, KEY), vaults.show_key(rt, VAULT, "later")
    cases = [
        (("key", "update", VAULT, KEY), 2, "expires_required"),
        (("key", "update", VAULT, KEY, "--expires", "next tuesday"), 2, None),
        (("key", "update", VAULT, "gone", "--expires", "2030-01-01T00:00:00Z"), 4, "key_deleted"),
        (("key", "update", VAULT, "nope", "--expires", "2030-01-01T00:00:00Z"), 3, None),
        (("key", "update", VAULT, KEY, "--expires", "2030-01-01T00:00:00Z", "--version", "9"), 3, None),
        (("key", "update", "no-vault", KEY, "--expires", "2030-01-01T00:00:00Z"), 3, None),
        (
            ("key", "update", VAULT, "later", "--expires", (clock.now() + timedelta(days=5)).isoformat()),
            2,
            None,
        ),
    ]
    for args, code, err_code in cases:
        err = cli(*args, code=code)
        assert err_code is None or err["code"] == err_code, (args, err)
    assert (snapshot(rt), vaults.show_key(rt, VAULT, KEY), vaults.show_key(rt, VAULT, "later")) == state0
    refused = [o for a, o, _ in audit_actions(rt) if a == "key.update"]
    assert refused == ["error"] * len(cases)
