"""How the warehouse looks after PostgreSQL: planner statistics after a load (a table a load changed by a
tenth or more is analyzed at once, so the checks and queries that follow a first sync get plans for the
table as it now is, not as an empty one), and how staged records are compressed."""

import time

import pytest
import sqlalchemy as sa

from canvas_assets.warehouse import Warehouse
from canvas_assets.warehouse.load import refresh_statistics
from canvas_assets_tests.test_warehouse import COURSE, T0, T1, T2, enrollment, run


def _analyzed(engine, name):
    """How many times the table was analyzed by hand, and PostgreSQL's row count estimate."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT s.analyze_count, c.reltuples FROM pg_stat_user_tables s "
                "JOIN pg_class c ON c.oid = s.relid WHERE s.relname = :name"
            ),
            {"name": name},
        ).one()


def _wait_for_stats(engine, name, count):
    """The statistics views see an ANALYZE once its backend has reported it (at most a second later)."""
    for _ in range(100):
        if _analyzed(engine, name)[0] >= count:
            return
        time.sleep(0.05)


def test_a_first_load_analyzes_its_tables_and_an_unchanged_one_does_not(pg_url):
    wh = Warehouse(pg_url)
    wh.ensure_schema()
    records = {COURSE: [enrollment(i, user_id=1000 + i, score=float(i % 90)) for i in range(1, 401)]}

    stats = run(wh, "enrollments", records, T0)
    assert stats.analyzed == ["canvas_enrollments", "canvas_score_history"]
    _wait_for_stats(wh.engine, "canvas_enrollments", 1)
    count, estimate = _analyzed(wh.engine, "canvas_enrollments")
    assert count == 1 and estimate == 400

    # Nothing changed: nothing to analyze.
    assert run(wh, "enrollments", records, T1).analyzed == []

    # 30 of 400 scores changed: under a tenth (plus 50) of the table, left to autovacuum; their 30
    # history rows are under a tenth of the history table too.
    for r in records[COURSE][:30]:
        r["grades"]["current_score"] = 99.5
    assert run(wh, "enrollments", records, T2).analyzed == []
    assert _analyzed(wh.engine, "canvas_enrollments")[0] == 1


def test_sqlite_has_nothing_to_refresh(sqlite_url):
    wh = Warehouse(sqlite_url)
    wh.ensure_schema()
    stats = run(wh, "enrollments", {COURSE: [enrollment(1, user_id=7)]}, T0)
    assert stats.inserted == 1
    assert stats.analyzed == []
    assert refresh_statistics(wh.engine, stats) == []


def test_staged_records_are_compressed_with_lz4_where_the_server_has_it(pg_url):
    wh = Warehouse(pg_url)
    wh.ensure_schema()
    with wh.engine.connect() as conn:
        has_lz4 = conn.execute(
            sa.text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        ).scalar()
        assert conn.execute(sa.text("SHOW default_toast_compression")).scalar() == (
            "lz4" if has_lz4 else "pglz"
        )
    records = [{"id": i, "body": "lorem ipsum " * 400} for i in range(50)]  # each over the TOAST threshold
    wh.write_staging([("students", 1, records)], run_id="r1", fetched_at=T0)
    with wh.engine.connect() as conn:
        query = "SELECT DISTINCT pg_column_compression(record) FROM canvas_staging_records"
        methods = conn.execute(sa.text(query)).scalars().all()
    assert methods == ["lz4" if has_lz4 else "pglz"]
    assert list(wh.read_staging("students", [1])[1]) == records


def _index_definitions(engine, *tables):
    """Every index of the tables, as PostgreSQL would create it again (name -> definition)."""
    with engine.connect() as conn:
        return dict(
            conn.execute(
                sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN :t").bindparams(
                    sa.bindparam("t", expanding=True)
                ),
                {"t": list(tables)},
            ).all()
        )


def test_a_first_load_builds_an_empty_tables_indexes_once_its_rows_are_in(pg_url, monkeypatch):
    from canvas_assets.warehouse import indexes, load

    wh = Warehouse(pg_url)
    wh.ensure_schema()
    with wh.engine.begin() as conn:  # an index a user added is kept too
        conn.execute(sa.text("CREATE INDEX users_own_index ON canvas_enrollments (role, user_id)"))
    tables = ("canvas_enrollments", "canvas_score_history")
    before = _index_definitions(wh.engine, *tables)
    dropped: list[dict[str, list[str]]] = []
    rebuild = indexes.DeferredIndexes.rebuild

    def spy(self):
        conn = self.conn
        dropped.append({name: sorted(d) for name, d in self.tables.items()})
        # Inside the load's transaction the dropped indexes are gone, the primary keys never are.
        present = set(
            conn.execute(
                sa.text("SELECT indexname FROM pg_indexes WHERE tablename IN :t").bindparams(
                    sa.bindparam("t", expanding=True)
                ),
                {"t": list(tables)},
            ).scalars()
        )
        gone = {d.split()[2] for definitions in self.tables.values() for d in definitions}
        assert present == set(before) - gone
        assert {n for n in before if n.startswith("pk_")} <= present
        rebuild(self)

    monkeypatch.setattr(indexes.DeferredIndexes, "rebuild", spy)
    records = {COURSE: [enrollment(i, user_id=1000 + i, score=float(i)) for i in range(1, 301)]}
    stats = run(wh, "enrollments", records, T0)
    assert stats.inserted == 300
    secondary = {
        t: sorted(d for n, d in before.items() if f" ON public.{t} " in d and not n.startswith("pk_"))
        for t in tables
    }
    assert dropped == [secondary]
    assert any("users_own_index" in d for d in secondary["canvas_enrollments"])
    assert _index_definitions(wh.engine, *tables) == before
    with wh.engine.connect() as conn:  # the rebuilt indexes answer
        found = conn.execute(sa.text("SELECT count(*) FROM canvas_enrollments WHERE user_id = 1007")).scalar()
    assert found == 1

    # A table that has rows keeps its indexes through a load (a new course, a changed score).
    records[COURSE + 1] = [enrollment(900 + i, user_id=2000 + i, course_id=COURSE + 1) for i in range(5)]
    records[COURSE][0]["grades"]["current_score"] = 77.0
    run(wh, "enrollments", records, T1)
    assert dropped[-1] == {}

    # A load that fails half-way into an empty table leaves it empty with every index in place.
    with wh.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE canvas_enrollments, canvas_score_history"))

    def crash(table_name, batch_index, rows):
        raise RuntimeError("crash in the middle of the load")

    monkeypatch.setattr(load, "_after_batch", crash)
    with pytest.raises(RuntimeError, match="crash in the middle"):
        run(wh, "enrollments", records, T2)
    assert _index_definitions(wh.engine, *tables) == before
    with wh.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM canvas_enrollments")).scalar() == 0
