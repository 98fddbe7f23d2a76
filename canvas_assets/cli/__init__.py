"""The command line: `canvas-assets` (sandbox, sync, demo, status, profiles, database, instance)."""
