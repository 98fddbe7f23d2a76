"""Dagster assets: the course catalog, the staging extract, the Layer-1 tables and their checks."""
