"""The pacer's rule, driven directly (no HTTP): room = R + 50k, allow floor(room/50) - 1 in flight."""

import threading

from canvas_assets.canvas.pacer import Pacer, PacerSlot


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_pacer_lets_one_request_go_alone_until_headers_arrive():
    assert Pacer(max_in_flight=32).limit == 1


def observe(pacer: Pacer, remaining: float, *, others: int = 0, cost: float | None = None) -> None:
    """One response reporting `remaining` (and `cost`) while `others` requests of ours were still in flight."""
    held = [pacer.acquire() for _ in range(others)]
    slot = pacer.acquire()
    pacer.mark_received(slot)
    pacer.release(slot, remaining=remaining, cost=cost)
    for h in held:
        pacer.release(h)


def test_a_response_from_an_empty_hosted_bucket_allows_thirteen_in_flight():
    pacer = Pacer(max_in_flight=32, initial_in_flight=4)
    # The first response: 3 others of ours in flight hold 150 units, a little real cost remains.
    observe(pacer, 700 - 150 - 0.2, others=3)
    assert pacer.cap == 13  # ceil((549.8 + 150) / 50) - 1: 14 fit from empty, one kept spare


def test_after_calibration_the_limit_grows_one_by_one_towards_the_cap():
    # Never a jump to the cap: a second process starting on the same token would jump too.
    pacer = Pacer(max_in_flight=32)
    observe(pacer, 700.0)
    assert (pacer.cap, pacer.limit) == (13, 4)
    for expected in range(5, 14):
        # One round trip: a limit's worth of saturated responses with room to spare grows it by one.
        for _ in range(expected - 1):
            assert pacer.limit == expected - 1
            observe(pacer, 700.0 - 50 * (expected - 2), others=expected - 2)
        assert pacer.limit == expected
    observe(pacer, 150.0, others=12)
    assert pacer.limit == 13  # never above the cap


def test_a_legacy_bucket_allows_eleven_in_flight():
    pacer = Pacer(max_in_flight=32)
    observe(pacer, 600 - 0.1)
    assert pacer.cap == 11


def test_requests_started_after_a_response_came_back_are_not_counted_in_its_reading():
    pacer = Pacer(max_in_flight=32, initial_in_flight=8)
    first = pacer.acquire()
    pacer.mark_received(first)
    late = [pacer.acquire() for _ in range(3)]  # started after `first` came back: not in its reading
    pacer.release(first, remaining=300.0)
    assert pacer.cap == 5  # ceil(300 / 50) - 1, not ceil((300 + 150) / 50) - 1
    for s in late:
        pacer.release(s)


def test_a_lagging_count_of_others_cannot_raise_the_room_above_the_largest_reading():
    pacer = Pacer(max_in_flight=32)
    observe(pacer, 700.0)
    # Three "others" that Canvas had in fact already finished: 700 + 150 would suggest 17 requests.
    observe(pacer, 700.0, others=3)
    assert pacer.cap == 13


def test_another_process_sharing_the_token_leaves_less_room():
    pacer = Pacer(max_in_flight=32)
    observe(pacer, 700.0)
    observe(pacer, 700 - 6 * 50 - 0.5)  # another process holds six requests in flight
    assert pacer.cap == 7
    assert pacer.limit <= 7


def test_a_low_reading_shrinks_the_limit_at_once_and_a_high_one_grows_it_by_one_when_saturated():
    pacer = Pacer(max_in_flight=32)
    observe(pacer, 700.0)
    while pacer.limit < 13:
        observe(pacer, 700.0 - 50 * (pacer.limit - 1), others=pacer.limit - 1)
    observe(pacer, 60.0, others=5)  # the bucket had room for one more at most
    assert pacer.limit == 5
    for _ in range(5):  # a round trip of saturated responses (5 in flight of 5) with room to spare
        observe(pacer, 400.0, others=4)
    assert pacer.limit == 6
    observe(pacer, 400.0, others=1)  # not saturated: no growth
    assert pacer.limit == 6


def test_the_limit_never_exceeds_max_in_flight_nor_drops_below_one():
    pacer = Pacer(max_in_flight=3)
    observe(pacer, 700.0)
    assert pacer.limit == 3
    observe(pacer, 10.0)
    assert pacer.limit == 1


def test_a_throttled_response_halves_the_limit():
    pacer = Pacer(max_in_flight=32, initial_in_flight=8)
    slot = pacer.acquire()
    pacer.release(slot, throttled=True)
    assert pacer.limit == 4


def test_a_nearly_full_bucket_makes_the_next_request_wait_for_the_leak():
    clock = FakeClock()
    pacer = Pacer(max_in_flight=32, clock=clock)
    slot = pacer.acquire()
    pacer.mark_received(slot)
    pacer.release(slot, remaining=35.0)  # 40 units short of the low-water mark: 4 s at 10 units/s
    started = threading.Event()

    def worker() -> None:
        pacer.acquire()
        started.set()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    assert not started.wait(0.2)
    clock.now += 4.0
    with pacer._lock:  # what the waiter's own timed wait does after 4 s
        pacer._grant()
    assert started.wait(5)
    t.join(5)


def test_acquire_blocks_while_the_limit_is_reached_and_resumes_on_release():
    pacer = Pacer(max_in_flight=1)
    held = pacer.acquire()
    got = threading.Event()
    slots: list[PacerSlot] = []
    t = threading.Thread(target=lambda: (slots.append(pacer.acquire()), got.set()), daemon=True)
    t.start()
    assert not got.wait(0.1)
    pacer.release(held)
    assert got.wait(5)
    t.join(5)
    assert (held.in_flight, slots[0].in_flight) == (1, 1)  # never two in flight at once


def test_with_another_process_on_the_token_three_requests_stay_spare():
    pacer = Pacer(max_in_flight=32)
    observe(pacer, 700.0)  # alone: the bucket's whole room is known
    # Four of ours in flight, and R says 4 more holds are in the bucket than ours explain.
    for _ in range(8):
        observe(pacer, 700.0 - 50 * 4 - 50 * 4, others=3)  # R = 300: 4 spare alone, fewer than needed
    assert pacer.limit == 5  # grew: 300 >= 75 + 150
    for _ in range(10):
        observe(pacer, 200.0, others=4)  # 2.5 spare: shared, so no growth
    assert pacer.limit == 5
    observe(pacer, 110.0, others=4)  # below two spare while shared: shrink
    assert pacer.limit == 4


def test_a_process_that_once_saw_another_on_the_token_keeps_to_half_the_bucket_while_readings_lag():
    # Seen in a sync beside another on the same token, with the CPU busy: readings counted responses not yet
    # read as in flight, so most of them hid the other process, and the two grew to 9 and 6 (15 holds on a
    # bucket that admits 13). Readings that show the other process keep this one to 6 for a while.
    clock = FakeClock()
    pacer = Pacer(max_in_flight=32, clock=clock)
    observe(pacer, 700.0)
    for _ in range(4):  # 3 holds beyond ours, in four readings over 0.12 s: another process
        clock.now += 0.04
        observe(pacer, 700.0 - 50 * 2 - 50 * 3, others=2)
    for _ in range(40):  # lagging readings: room to spare, nobody else visible
        clock.now += 0.05
        observe(pacer, 451.0, others=pacer.limit - 1)
    assert pacer.limit == 6
    clock.now += 10.5  # no sign of the other process for longer than the pacer remembers: grow again
    for _ in range(40):
        observe(pacer, 700.0 - 50 * (pacer.limit - 1), others=pacer.limit - 1)  # all explained
    assert pacer.limit > 6


def test_one_unexplained_hold_now_and_then_does_not_halve_a_lone_process():
    # Threads that release their slots out of order make a lone process see one hold it cannot explain.
    clock = FakeClock()
    pacer = Pacer(max_in_flight=32, clock=clock)
    observe(pacer, 700.0)
    for _ in range(3):  # and a burst of readings that show two within a few milliseconds
        clock.now += 0.002
        observe(pacer, 700.0 - 50 * 3 - 100, others=3)
    for _ in range(60):
        observe(pacer, 700.0 - 50 * (pacer.limit - 1) - 50, others=pacer.limit - 1)  # one hold unexplained
        observe(pacer, 700.0 - 50 * (pacer.limit - 1), others=pacer.limit - 1)  # all explained
    assert pacer.limit > 6


def test_sparse_unexplained_holds_of_a_busy_lone_process_do_not_halve_it():
    # Seen in a lone sync on a machine whose other core was busy: a reading thread held up between its
    # response's arrival and its release sees holds that other threads released meanwhile. Three such
    # readings came within 0.8 s (2.95 s, 3.04 s, 3.72 s into the fetch), then none for 17 s; counted as
    # another process, they kept the fetch at 6 of 13 for a quarter of its time.
    clock = FakeClock()
    pacer = Pacer(max_in_flight=32, clock=clock)
    observe(pacer, 700.0)
    for step in (0.0, 0.087, 0.678, 0.3, 0.3):
        for _ in range(30):
            observe(pacer, 700.0 - 50 * (pacer.limit - 1), others=pacer.limit - 1)  # all explained
        clock.now += step
        observe(pacer, 700.0 - 50 * (pacer.limit - 1) - 200, others=pacer.limit - 1)  # 4 holds unexplained
    assert pacer._shared_until < clock.now
    assert pacer.limit > 6


def test_the_real_cost_of_our_own_requests_is_not_taken_for_another_process():
    # X-Request-Cost: each request leaves its real cost in the bucket, which leaks 10 units/s. Requests
    # costing 1.5 units every 50 ms (30 units/s) build up what the readings show as 150 units less room:
    # ours, not another process's holds.
    clock = FakeClock()
    pacer = Pacer(max_in_flight=32, clock=clock)
    observe(pacer, 700.0)
    for _ in range(30):
        observe(pacer, 700.0 - 50 * (pacer.limit - 1), others=pacer.limit - 1)
    residual = 0.0
    for _ in range(150):
        clock.now += 0.05
        residual = max(0.0, residual - 0.5) + 1.5
        observe(pacer, 700.0 - 50 * 5 - residual, others=5, cost=1.5)
    assert residual > 140
    assert pacer._shared_until < clock.now


def _waiting(pacer: Pacer, n: int) -> None:
    """Block until `n` requests wait for a slot (the threads below queue in their own time)."""
    for _ in range(500):
        with pacer._lock:
            if len(pacer._waiting) == n:
                return
        threading.Event().wait(0.01)
    raise AssertionError(f"{n} waiters expected")


def test_a_free_slot_goes_to_the_highest_priority_then_to_the_longest_waiting():
    pacer = Pacer(max_in_flight=1)
    held = pacer.acquire()
    order: list[str] = []
    threads = []
    for name, priority in (("first page a", 0), ("page 3", 3), ("first page b", 0), ("page 7", 7)):

        def take(name: str = name, priority: int = priority) -> None:
            slot = pacer.acquire(priority)
            order.append(name)
            pacer.release(slot)

        threads.append(threading.Thread(target=take, daemon=True))
        threads[-1].start()
        _waiting(pacer, len(threads))
    pacer.release(held)
    for t in threads:
        t.join(5)
    assert order == ["page 7", "page 3", "first page a", "first page b"]


def test_a_slot_is_taken_for_the_waiter_it_is_handed_to():
    pacer = Pacer(max_in_flight=1)
    held = pacer.acquire()
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(pacer.acquire(5).in_flight), daemon=True)
    t.start()
    _waiting(pacer, 1)
    pacer.release(held)
    assert pacer.in_flight == 1  # already the waiter's, even before it runs again
    t.join(5)
    assert got == [1]


def test_a_kept_slot_is_held_for_the_next_page_and_no_waiter_gets_it():
    pacer = Pacer(max_in_flight=1)
    page = pacer.acquire()
    got = threading.Event()
    t = threading.Thread(target=lambda: (pacer.acquire(), got.set()), daemon=True)
    t.start()
    _waiting(pacer, 1)
    pacer.release(page, keep=True)
    assert not got.wait(0.1)  # the place is the next page's
    assert (pacer.kept, pacer.in_flight) == (1, 0)
    next_page = pacer.acquire(1, kept=page)  # at once, although the limit is reached
    assert (pacer.kept, pacer.in_flight) == (0, 1)
    pacer.release(next_page)
    assert got.wait(5)
    t.join(5)


def test_a_forgotten_kept_slot_goes_to_the_next_waiter():
    pacer = Pacer(max_in_flight=1)
    page = pacer.acquire()
    pacer.release(page, keep=True)
    got = threading.Event()
    t = threading.Thread(target=lambda: (pacer.acquire(), got.set()), daemon=True)
    t.start()
    _waiting(pacer, 1)
    pacer.forget(page)
    assert got.wait(5)
    t.join(5)
    pacer.forget(page)  # twice is harmless
    assert pacer.kept == 0


def test_a_throttled_response_keeps_no_slot():
    pacer = Pacer(max_in_flight=4, initial_in_flight=4)
    page = pacer.acquire()
    pacer.release(page, throttled=True, keep=True)
    assert pacer.kept == 0 and not page.kept


def test_a_kept_slot_does_not_skip_the_wait_for_the_leak():
    clock = FakeClock()
    pacer = Pacer(max_in_flight=32, clock=clock)
    slot = pacer.acquire()
    pacer.mark_received(slot)
    pacer.release(slot, remaining=35.0, keep=True)  # nearly full: the next request waits 4 s
    started = threading.Event()
    t = threading.Thread(target=lambda: (pacer.acquire(1, kept=slot), started.set()), daemon=True)
    t.start()
    _waiting(pacer, 1)
    assert pacer.kept == 0  # given up: it waits like any other request
    assert not started.wait(0.2)
    clock.now += 4.0
    with pacer._lock:  # what the waiter's own timed wait does after 4 s
        pacer._grant()
    assert started.wait(5)
    t.join(5)
