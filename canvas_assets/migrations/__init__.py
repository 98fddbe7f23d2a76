"""Alembic migrations of the warehouse schema; run them with `canvas-assets db upgrade`.

Configured in code by `canvas_assets.warehouse.migrate` (no alembic.ini). A schema change means: edit
`canvas_assets/warehouse/models.py`, add `versions/NNNN_<slug>.py` with the matching operations, and let
the test suite confirm that the migrated schema equals the models on SQLite and PostgreSQL.
"""
