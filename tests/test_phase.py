"""The control loop's states: every state is reachable from STARTING, the ends are terminal, and a
move the transition table lacks is refused."""

import pytest

from elastrain.elastic.phase import TRANSITIONS, Phase, PhaseError, advance


def test_the_ends_are_terminal_and_every_state_is_reachable_from_starting():
    assert {p for p in Phase if p.is_terminal} == {Phase.FINISHED, Phase.FAILED, Phase.CANCELLED,
                                                    Phase.INTERRUPTED}
    seen, frontier = {Phase.STARTING}, [Phase.STARTING]
    while frontier:
        for to in TRANSITIONS[frontier.pop()] - seen:
            seen.add(to)
            frontier.append(to)
    assert seen == set(Phase)
    assert {p for p in Phase if p.ended_by_group} == {Phase.FINISHED, Phase.FAILED, Phase.CANCELLED}


def test_a_move_the_table_lacks_is_refused():
    assert advance(Phase.RUNNING, Phase.RESIZING) is Phase.RESIZING
    with pytest.raises(PhaseError, match="from finished to running"):
        advance(Phase.FINISHED, Phase.RUNNING)
    with pytest.raises(PhaseError):
        advance(Phase.STARTING, Phase.FINISHED)
