"""The extract caps glibc's malloc arenas before its pool's threads allocate (canvas_assets.extract.memory)."""

import ctypes

import pytest

from canvas_assets.extract import memory


def test_the_cap_is_set_with_mallopt_unless_the_environment_sets_one(monkeypatch):
    calls = []
    monkeypatch.setattr(
        memory, "_glibc", lambda name: (lambda *args: calls.append(args)) if name == "mallopt" else None
    )
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    memory.limit_malloc_arenas()
    assert calls == [(memory.M_ARENA_MAX, memory.ARENAS)]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    memory.limit_malloc_arenas()
    assert len(calls) == 1


def test_glibc_accepts_the_cap():
    mallopt = memory._glibc("mallopt")
    if mallopt is None:
        pytest.skip("not glibc")
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    assert mallopt(memory.M_ARENA_MAX, memory.ARENAS) == 1  # mallopt returns 1 on success


def test_the_extract_caps_the_arenas_before_it_fetches(monkeypatch):
    from canvas_assets.extract import engine as extraction

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
