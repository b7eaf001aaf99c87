"""The suite's own layout: test folders are not packages, so pytest imports each conftest under its file name;
a second `conftest.py` in a folder that is not a package would shadow tests/conftest.py's `from conftest
import ...` in whichever worker loads it first (it did: 17 modules failed to import in one run)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_nested_conftest_sits_in_a_package():
    loose = [str(c.relative_to(TESTS)) for c in TESTS.rglob("conftest.py")
             if c.parent != TESTS and not (c.parent / "__init__.py").is_file()]
    assert not loose, f"give these folders an __init__.py: {loose}"
