"""Persistent state: SQLAlchemy 2 models, migrations and the queries the API uses."""
