"""FastAPI backend."""
