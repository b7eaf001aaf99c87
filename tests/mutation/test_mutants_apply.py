"""Every listed mutant still applies: its code occurs exactly once in its file (a refactor that moves the
code must move the mutant with it, or `make mutants` stops at it), and its named tests exist."""

from pathlib import Path

import pytest

from mutants import MUTANTS

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_the_mutant_applies_once_and_names_real_tests(mutant):
    source = (ROOT / "src" / "polymodal" / mutant.file).read_text()
    assert source.count(mutant.old) == 1, f"{mutant.name}: its code occurs {source.count(mutant.old)} times"
    assert mutant.new != mutant.old
    for target in mutant.tests:
        assert (ROOT / target.split("::")[0]).is_file(), target


def test_names_are_unique():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
