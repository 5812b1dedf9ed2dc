"""The ``maas`` command line (entry point ``services.apps.cli:main``)."""
from services.apps.cli.main import app, main

__all__ = ["app", "main"]
