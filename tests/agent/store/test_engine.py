"""Database URLs the agent cannot open are one line naming the setting, not a traceback."""

import pytest

from handoff_agent.store.engine import BadDatabaseURL, make_engine


def test_a_sqlite_url_in_a_missing_directory_names_it_and_the_setting(tmp_path):
    """It was SQLAlchemy's ~40-line "unable to open database file" at the first query."""
    path = tmp_path / "nodir" / "registry.db"
    with pytest.raises(BadDatabaseURL) as e:
        make_engine(f"sqlite:///{path}")
    assert str(e.value) == (
        f"No directory {path.parent} for the SQLite database {path} "
        "(c.HandoffAgent.database_url, --database-url): create it, or fix the path."
    )
    assert not path.parent.exists()


def test_a_sqlite_url_in_an_existing_directory_opens(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()
