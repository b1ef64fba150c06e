"""Control messages posted in order, retried while the target's message buffers are full.

Both VMBus ends post their control messages with HvCallPostMessage, which fails with
INSUFFICIENT_BUFFERS (or INSUFFICIENT_MEMORY) while the target SINT's queue is full (fact sheet
§1.7, §2.4). Linux then retries the same message with a growing delay (``vmbus_post_msg``: up
to 100 tries); so does an :class:`Outbox`, in the order the messages were put, with one retry
timer at a time however many messages wait behind the head: posting those meanwhile would
only fail again, and each failure would set one more timer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from winhv._status import HvStatus

__all__ = ["POST_RETRIES", "POST_RETRY_NS", "Outbox"]

#: Tries of one message before it is given up (Linux ``vmbus_post_msg``), and the first delay;
#: the delay doubles each try up to 2**10 times this.
POST_RETRIES = 100
POST_RETRY_NS = 10_000
_RETRY = (HvStatus.INSUFFICIENT_BUFFERS, HvStatus.INSUFFICIENT_MEMORY)

_T = TypeVar("_T")


class Outbox(Generic[_T]):
    """Items posted in order by ``post(item)``, which returns the PostMessage status, or
    ``None`` when there is no way to the target now (the items wait for the next ``put`` or
    :meth:`drain`).

    A retryable status schedules one retry through ``call_later(delay_ns, callback)`` (without
    a clock the item is not retried). An item leaves the box once posted or given up; then,
    for any status but success, ``on_failure(item, status)`` runs, and it may put new items.
    ``limit`` bounds how many wait: :meth:`put` refuses more.
    """

    def __init__(self, post: Callable[[_T], Any], *,
                 call_later: Callable[[int, Callable[[], Any]], Any] | None,
                 on_failure: Callable[[_T, Any], Any], limit: int | None = None) -> None:
        self._post = post
        self._call_later = call_later
        self._on_failure = on_failure
        self.limit = limit
        self._items: deque[_T] = deque()
        self._retries = 0
        #: A retry timer is set: it, not put(), drains next.
        self.retry_pending = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: _T) -> bool:
        """Queue ``item`` and post what can be posted; False (nothing queued) when full."""
        if self.limit is not None and len(self._items) >= self.limit:
            return False
        self._items.append(item)
        if not self.retry_pending:
            self.drain()
        return True

    def clear(self) -> None:
        """Forget every waiting item (a pending retry then finds nothing to post)."""
        self._items.clear()
        self._retries = 0

    def drain(self) -> None:
        """Post from the head until the box is empty, a retry is due, or no way is open."""
        items = self._items
        while items:
            item = items[0]
            status = self._post(item)
            if status is None:
                return
            if status in _RETRY and self._retries < POST_RETRIES and \
                    self._call_later is not None:
                self._retries += 1
                self._call_later(POST_RETRY_NS << min(self._retries, 10), self._retry)
                self.retry_pending = True   # only once the timer is really set
                return
            self._retries = 0
            items.popleft()
            if status != HvStatus.SUCCESS:
                self._on_failure(item, status)
                if self.retry_pending:
                    return   # what on_failure put is waiting for a retry: its timer drains

    def _retry(self) -> None:
        self.retry_pending = False
        self.drain()
