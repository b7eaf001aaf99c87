"""The server's tests (a package, so its conftest is `serving.conftest`, not a second `conftest` beside
tests/conftest.py)."""
