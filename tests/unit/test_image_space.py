"""An image build that would run out of disk fails first, saying how much it needs and where."""

from __future__ import annotations

from pathlib import Path

from uplion.devstack.images import DEFAULT_FREE_FOR_BUILD, FREE_FOR_BUILD, space_problem


def test_a_build_without_room_says_what_it_needs() -> None:
    where = Path("/var/lib/images")
    problem = space_problem("worker-local", 30 << 30, where)
    assert problem is not None
    assert "about 34 GB free under /var/lib/images" in problem
    assert "30.0 GB are" in problem
    assert "UPLION_IMAGE_STORAGE" in problem
    assert space_problem("worker-local", FREE_FOR_BUILD["worker-local"], where) is None
    assert space_problem("platform", DEFAULT_FREE_FOR_BUILD, where) is None
    assert space_problem("platform", DEFAULT_FREE_FOR_BUILD - 1, where) is not None
