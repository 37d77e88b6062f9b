"""A small AWX / Automation Controller REST double for demos and tests (its own process)."""
