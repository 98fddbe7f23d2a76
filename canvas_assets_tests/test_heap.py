"""The extract caps glibc's malloc arenas before its pool's threads allocate (canvas_assets.heap)."""

import pytest

from canvas_assets import heap


def test_the_cap_is_set_with_mallopt_unless_the_environment_sets_one(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "_mallopt", lambda: lambda *args: calls.append(args))
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    heap.limit_malloc_arenas()
    assert calls == [(heap.M_ARENA_MAX, heap.ARENAS)]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    heap.limit_malloc_arenas()
    assert len(calls) == 1


def test_glibc_accepts_the_cap():
    mallopt = heap._mallopt()
    if mallopt is None:
        pytest.skip("not glibc")
    assert mallopt(heap.M_ARENA_MAX, heap.ARENAS) == 1  # mallopt returns 1 on success


def test_the_extract_caps_the_arenas_before_it_fetches(monkeypatch):
    from canvas_assets import extraction

    order = []
    monkeypatch.setattr(extraction, "limit_malloc_arenas", lambda: order.append("cap"))

    class Warehouse:
        def fetch_states(self, entity, course_ids):
            order.append("states")
            return {}

    class Metrics:
        def snapshot(self):
            return {}

    class Client:
        metrics = Metrics()

    from canvas_assets.profiles import preset

    extraction.Extractor(Client(), Warehouse(), preset("LIGHTWEIGHT"), entities=[], run_id="r").run([])
    assert order[0] == "cap"
