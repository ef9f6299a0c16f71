"""DataKey, keyring and usage budgets."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest

from keyshift.crypto.dek import BlockBudget, DataKey, Keyring, UsageBudget, generate_dek
from keyshift.errors import IntegrityError


def test_repr_and_str_never_show_key_bytes() -> None:
    key = generate_dek()
    for text in (repr(key), str(key), f"{key}", repr([key]), repr(Keyring(key))):
        assert key.key.hex() not in text
        assert repr(key.key)[2:-1] not in text
    assert key.id.hex() in repr(key)


def test_data_key_is_immutable_and_not_picklable() -> None:
    key = generate_dek()
    with pytest.raises(AttributeError):
        key.key = b"x" * 32  # type: ignore[misc]
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.deepcopy(key)


@pytest.mark.parametrize(
    ("dek_id", "value"),
    [(b"x" * 15, b"k" * 32), (b"x" * 16, b"k" * 31), ("x" * 16, b"k" * 32), (b"x" * 16, bytearray(32))],
)
def test_data_key_validates_lengths_and_types(dek_id: object, value: object) -> None:
    with pytest.raises(ValueError):
        DataKey(dek_id, value)  # type: ignore[arg-type]


def test_generated_keys_are_distinct_and_equal_by_value() -> None:
    a, b = generate_dek(), generate_dek()
    assert a.id != b.id and a.key != b.key and a != b
    assert DataKey(a.id, a.key) == a and hash(DataKey(a.id, a.key)) == hash(a)


def test_keyring_get() -> None:
    primary, old = generate_dek(), generate_dek()
    ring = Keyring(primary, [old])
    assert ring.primary is primary
    assert ring.get(old.id) is old and ring.get(primary.id) is primary
    assert set(ring.ids()) == {primary.id, old.id} and old.id in ring
    with pytest.raises(IntegrityError, match="unknown data key"):
        ring.get(b"\x00" * 16)
    with pytest.raises(TypeError):
        Keyring(b"nope")  # type: ignore[arg-type]


def test_usage_budget() -> None:
    budget = UsageBudget(limit=5, used=2)
    assert budget.reserve(2) and budget.used == 4
    assert not budget.reserve(2) and budget.used == 4  # refused: nothing taken
    assert budget.reserve(1) and budget.remaining == 0
    assert not budget.reserve(1)
    assert budget.reserve(0)
    assert UsageBudget().limit == 2**31


def test_usage_budget_threads_never_pass_the_limit() -> None:
    budget = UsageBudget(limit=10_000)
    granted: list[int] = []

    def work() -> None:
        granted.append(sum(1 for _ in range(4000) if budget.reserve(1)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 10_000 == budget.used


def test_block_budget_reserves_blocks_from_the_persistent_counter() -> None:
    # A stand-in for the database row: UsageBudget has the same semantics as the guarded UPDATE.
    shared = UsageBudget(limit=2500)
    calls: list[int] = []

    def reserve_block(n: int) -> bool:
        calls.append(n)
        return shared.reserve(n)

    local = BlockBudget(reserve_block, block=1000)
    assert sum(1 for _ in range(2000) if local.reserve(1)) == 2000
    assert calls == [1000, 1000] and shared.used == 2000
    # The next block does not fit under the limit: refused, the caller must roll the DEK.
    assert not local.reserve(1)
    assert shared.used == 2000 and local.left == 0
    # A request larger than a block takes what it needs in one go.
    big = BlockBudget(UsageBudget(limit=10_000).reserve, block=10)
    assert big.reserve(25) and big.left == 0
