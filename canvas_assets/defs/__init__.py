"""The Dagster face: assets (catalog, staging extract, Layer-1), checks, jobs, schedules and sensors, and the
course partitions. `canvas_assets.definitions` gathers them into the one Definitions object."""
