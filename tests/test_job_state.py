import pytest

from scheduler.store.job_state import ALLOWED, TERMINAL, JobState


def test_every_state_has_a_rule_and_terminal_states_go_nowhere():
    assert set(ALLOWED) == set(JobState)
    for state in TERMINAL:
        assert ALLOWED[state] == frozenset()
        assert state.terminal


@pytest.mark.parametrize("source,target,allowed", [
    ("pending", "running", True),
    ("pending", "succeeded", False),
    ("deferred", "running", True),
    ("running", "succeeded", True),
    ("running", "suspended", True),
    ("running", "deferred", False),
    ("suspended", "running", True),
    ("succeeded", "running", False),
    ("cancelled", "pending", False),
])
def test_transition_table(source, target, allowed):
    assert JobState(source).can_go_to(JobState(target)) is allowed


def test_docstring_lists_the_same_transitions_as_the_table():
    """The enum's documentation is what users read; it must not drift from the rules enforced."""
    import scheduler.store.job_state as module

    for state, targets in ALLOWED.items():
        if not targets:
            continue
        line = next(line for line in module.__doc__.splitlines() if line.strip().startswith(state.value + " "))
        listed = {t.strip() for t in line.split("->")[1].split(",")}
        assert listed == {t.value for t in targets}, state
