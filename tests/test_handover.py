"""Events and log records reach Prefect's sender threads in bunches (flows.prefect_bridge):
every item arrives, in the order sent, each in the context it was sent in, and a drain (at
exit, or Prefect's own) hands over what is held first."""

from __future__ import annotations

import contextvars
import time

from flows.prefect_bridge import HAND_OVER_EVERY, bunch

run = contextvars.ContextVar("run", default=None)


class Sender:
    """Stands for Prefect's EventsWorker: it records each item with the run in its context."""

    def __init__(self) -> None:
        self.got: list[tuple[int, int | None]] = []
        self.drained_after: list[tuple[int, int | None]] | None = None

    def send(self, item: int) -> None:
        if item < 0:
            raise RuntimeError("Cannot put items in a stopped service instance.")
        self.got.append((item, run.get()))

    def _drain(self, at_exit: bool = False) -> bool:
        self.drained_after = list(self.got)
        return True


bunch(Sender)


def _send_in_run(sender: Sender, item: int) -> None:
    def inside() -> None:
        run.set(item * 10)
        sender.send(item)

    contextvars.copy_context().run(inside)


def test_items_arrive_in_order_each_in_its_own_context():
    sender = Sender()
    for item in range(200):
        _send_in_run(sender, item)
    deadline = time.monotonic() + 20 * HAND_OVER_EVERY + 5
    while len(sender.got) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sender.got == [(item, item * 10) for item in range(200)]


def test_a_drain_hands_over_what_is_held_first():
    sender = Sender()
    for item in range(50):
        _send_in_run(sender, item)
    assert sender._drain(at_exit=True) is True
    assert sender.drained_after == [(item, item * 10) for item in range(50)]


def test_an_item_refused_does_not_stop_the_others(caplog):
    sender = Sender()
    for item in (1, -1, 2):
        _send_in_run(sender, item)
    sender._drain()
    assert sender.got == [(1, 10), (2, 20)]
    assert "did not take an item" in caplog.text
    assert "stopped service instance" in caplog.text


def test_bunching_twice_wraps_once():
    send, drain = Sender.send, Sender._drain
    bunch(Sender)  # serve sets up working again (the same process, another serve)
    assert (Sender.send, Sender._drain) == (send, drain)
