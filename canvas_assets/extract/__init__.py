"""The extraction engine (Dagster-free): many courses fetched concurrently into staging, incrementally where
Canvas can filter by change time. The `canvas_extract` asset runs it."""
