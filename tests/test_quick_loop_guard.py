"""The quick loop's guard (tests/conftest.py) judges what a test spends itself."""

from __future__ import annotations

from tests.conftest import UNMARKED_LIMIT_S, over_the_limit


def test_over_the_limit_catches_a_test_that_waits_on_a_quiet_machine() -> None:
    # Waiting for Ray or a subprocess: little CPU of its own, long wall time, idle machine.
    assert over_the_limit(UNMARKED_LIMIT_S + 1, 0.5, load_per_core=0.3)


def test_over_the_limit_catches_a_test_that_computes_for_long() -> None:
    assert over_the_limit(UNMARKED_LIMIT_S + 1, UNMARKED_LIMIT_S + 0.5, load_per_core=3.0)


def test_over_the_limit_spares_a_quick_test_on_a_busy_machine() -> None:
    # Two loads per core stretch 3 s of work to 7 s of wall time.
    assert not over_the_limit(UNMARKED_LIMIT_S + 2, 3.0, load_per_core=2.0)
    assert over_the_limit(2 * UNMARKED_LIMIT_S + 1, 3.0, load_per_core=2.0)
