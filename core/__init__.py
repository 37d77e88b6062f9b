"""Shared core of patchpilot: settings, database, tables, intent schema, pure validation, state machine."""
