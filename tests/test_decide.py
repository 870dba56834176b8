"""The controller's decision after a watch of its group, as a pure function."""

import pytest

from elastrain.elastic.decide import Cancel, Fail, Finish, Interrupt, Recover, Resize, Returned, decide


@pytest.mark.parametrize(("returned", "expected"), [
    (Returned({0: "done", 1: "done"}), Finish()),
    (Returned({0: "paused", 1: "paused"}), Resize()),
    (Returned({0: "paused", 1: "broken"}), Recover()),
    (Returned({0: "paused"}, dead=True), Recover()),
    (Returned({0: "broken", 1: "error"}, dead=True), Fail(1)),            # the training code's error wins
    (Returned({0: "diverged", 1: "paused"}, cancel=True), Fail(0)),
    (Returned({0: "paused", 1: "paused"}, interrupt=True, cancel=True), Interrupt()),
    (Returned({0: "paused", 1: "paused"}, cancel=True), Cancel()),
    (Returned({0: "broken", 1: "paused"}, cancel=True, interrupt=True), Recover()),   # whole state first
    (Returned({0: "done", 1: "done"}, cancel=True), Finish()),             # done is done
])
def test_the_controller_decides_from_what_its_group_returned(returned, expected):
    assert decide(returned) == expected
