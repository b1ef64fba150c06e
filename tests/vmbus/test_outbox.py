"""The control-message outbox both VMBus ends post through: order kept, one retry timer while
the target's buffers are full (Linux ``vmbus_post_msg``: up to 100 tries, growing delays), a
failure reported once per message, a bound on what waits."""

from __future__ import annotations

from typing import Any

import pytest

from winhv._status import HvStatus
from winhv.drivers.vmbus._outbox import POST_RETRIES, POST_RETRY_NS, Outbox

FULL = HvStatus.INSUFFICIENT_BUFFERS


class Target:
    """A PostMessage target whose next answers are scripted (then SUCCESS), with a clock."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.posted: list[Any] = []
        self.timers: list[tuple[int, Any]] = []
        self.failures: list[tuple[Any, Any]] = []

    def post(self, item: Any) -> Any:
        status = self.answers.pop(0) if self.answers else HvStatus.SUCCESS
        if status == HvStatus.SUCCESS:
            self.posted.append(item)
        return status

    def call_later(self, delay: int, callback: Any) -> None:
        self.timers.append((delay, callback))

    def fire(self) -> None:
        _delay, callback = self.timers.pop(0)
        callback()

    def outbox(self, **kwargs: Any) -> Outbox[Any]:
        return Outbox(self.post, call_later=self.call_later,
                      on_failure=lambda item, status: self.failures.append((item, status)),
                      **kwargs)


def test_items_go_out_in_order_behind_one_retry_timer():
    target = Target(FULL, FULL)
    box = target.outbox()
    for item in "abc":
        box.put(item)
    assert (target.posted, len(box), len(target.timers)) == ([], 3, 1)  # one timer, not 3
    target.fire()
    assert target.timers[0][0] == POST_RETRY_NS << 2   # the delay doubles each try
    target.fire()
    assert (target.posted, len(box), target.timers, target.failures) == (list("abc"), 0, [], [])


def test_a_message_is_given_up_after_the_last_try_and_the_next_one_goes_on():
    target = Target(*[FULL] * (POST_RETRIES + 1))
    box = target.outbox()
    box.put("stuck")
    box.put("next")
    while target.timers:
        target.fire()
    assert target.failures == [("stuck", FULL)]
    assert target.posted == ["next"]


def test_a_failure_may_put_a_new_item_and_it_goes_out_after():
    target = Target(HvStatus.INVALID_CONNECTION_ID)
    box = Outbox(target.post, call_later=target.call_later,
                 on_failure=lambda item, status: box.put(f"{item} again"))
    box.put("contact")
    box.put("other")
    assert target.posted == ["contact again", "other"]


def test_no_way_to_the_target_keeps_the_items_until_the_next_drain():
    open_now = False
    posted: list[str] = []

    def post(item: str) -> Any:
        if not open_now:
            return None
        posted.append(item)
        return HvStatus.SUCCESS

    box: Outbox[str] = Outbox(post, call_later=None, on_failure=lambda *a: None)
    box.put("a")
    assert (posted, len(box)) == ([], 1)
    open_now = True
    box.put("b")
    assert posted == ["a", "b"]


def test_without_a_clock_a_full_target_fails_the_message_at_once():
    target = Target(FULL)
    box = Outbox(target.post, call_later=None,
                 on_failure=lambda item, status: target.failures.append((item, status)))
    box.put("x")
    assert target.failures == [("x", FULL)]


def test_the_limit_refuses_what_would_not_fit_and_clear_empties_it():
    target = Target(FULL)
    box = target.outbox(limit=2)
    assert box.put(1)
    assert box.put(2)
    assert not box.put(3)
    assert len(box) == 2
    box.clear()
    target.fire()   # the pending retry finds nothing to post
    assert (len(box), target.posted, box.retry_pending) == (0, [], False)


def test_a_failure_putting_an_item_that_must_wait_leaves_one_timer():
    # on_failure puts a new item whose post finds the target full: the retry that sets is the
    # only one, and the item goes out once, when it fires.
    target = Target(HvStatus.INVALID_CONNECTION_ID, FULL, FULL)
    box = Outbox(target.post, call_later=target.call_later,
                 on_failure=lambda item, status: box.put("fallback"))
    box.put("contact")
    assert (len(target.timers), box.retry_pending, target.posted) == (1, True, [])
    target.fire()
    assert (len(target.timers), target.posted) == (1, [])   # still full: the one timer again
    target.fire()
    assert (target.posted, target.timers, len(box)) == (["fallback"], [], 0)


def test_a_clock_that_cannot_set_the_timer_leaves_the_box_able_to_drain():
    target = Target(FULL)

    def broken(delay: int, callback: Any) -> None:
        raise RuntimeError("no timer")

    box: Outbox[str] = Outbox(target.post, call_later=broken, on_failure=lambda *a: None)
    with pytest.raises(RuntimeError, match="no timer"):
        box.put("x")
    assert not box.retry_pending   # so the next put drains instead of waiting forever
    box.put("y")
    assert target.posted == ["x", "y"]
