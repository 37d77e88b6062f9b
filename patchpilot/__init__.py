"""The patchpilot command line: up, migrate, worker, api."""
