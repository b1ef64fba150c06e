"""The host-wide part of the root's VMBus: the pools every VM's server draws on (ids, SIEF
flags) and the undo that makes a channel open a transaction."""

from __future__ import annotations

import pytest

from winhv.drivers.vmbus._host import Undo, _Pool


def test_a_failed_transaction_runs_every_inverse_newest_first_even_past_one_that_raises(caplog):
    done: list[str] = []

    def broken() -> None:
        raise RuntimeError("inverse failed")

    def transaction() -> None:
        with Undo() as undo:
            undo.callback(done.append, "first")
            undo.callback(broken)
            undo.callback(done.append, "last")
            raise KeyError("step failed")

    with pytest.raises(KeyError):
        transaction()
    assert done == ["last", "first"]
    assert "inverse failed" in caplog.text
    with Undo() as undo:
        undo.callback(done.append, "never")
        undo.commit()
    assert done == ["last", "first"]


def test_undoing_two_fresh_takes_never_hands_out_a_retired_value_again():
    # The second value is retired inside the transaction (someone else has that id); undoing,
    # the pool must not step its counter back onto it, and the first comes back for reuse.
    pool = _Pool("id", 100, lambda i: 1000 + i)

    def transaction() -> None:
        with Undo() as undo:
            pool.take(undo)
            second = pool.take(undo)
            pool.retire(second)
            raise RuntimeError("the create failed")

    with pytest.raises(RuntimeError):
        transaction()
    handed = {pool.take() for _ in range(3)}
    assert 1001 not in handed
    assert 1000 in handed
