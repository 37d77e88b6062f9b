"""The Alembic migrations build exactly the schema the models describe."""

import pytest

pytestmark = pytest.mark.integration


def test_migrated_schema_matches_the_models(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    import core.models  # noqa: F401 - registers the tables
    from core.db import get_engine

    with get_engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
