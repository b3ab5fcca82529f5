"""Progression pipelines: completion imports, transfers, merges, undo and export for the learning platform."""
