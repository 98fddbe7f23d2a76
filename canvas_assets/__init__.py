"""canvas-assets: Canvas LMS mirrored into SQL as Dagster assets."""
