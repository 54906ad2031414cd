"""SQL over the catalog with DuckDB: views over every table, pinned versions, a shell."""

from sql.session import COMMITS_VIEW, SqlSession, parse_as_of

__all__ = ["COMMITS_VIEW", "SqlSession", "parse_as_of"]
