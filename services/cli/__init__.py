"""The ``maas`` command line (entry point ``services.cli:main``)."""
from services.cli.main import app, main

__all__ = ["app", "main"]
