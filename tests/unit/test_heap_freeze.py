"""The gateway process freezes its startup heap (gc.freeze) and thaws it on a reload, so the
replaced config can be collected."""

from __future__ import annotations

import gc

from bastion.gateway.server import GC_YOUNG_THRESHOLD, freeze_heap, thaw_after_reload


def test_freeze_then_thaw_when_the_old_state_is_still_in_flight():
    try:
        freeze_heap()
        assert gc.get_freeze_count() > 0
        thaw_after_reload(retired_inflight=True)
        assert gc.get_freeze_count() == 0  # collectable again, until a restart
    finally:
        gc.unfreeze()


def test_a_released_old_state_is_collected_and_the_rest_frozen_again():
    class Node:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the cyclic GC frees it

    try:
        cycle = Node()
        freeze_heap()
        frozen = gc.get_freeze_count()
        del cycle  # the startup state, replaced by a reload: frozen, so still held
        thaw_after_reload(retired_inflight=False)
        assert not any(type(o) is Node for o in gc.get_objects())  # collected by the thaw
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def test_nothing_to_thaw_when_never_frozen():
    gc.unfreeze()
    thaw_after_reload(retired_inflight=False)
    assert gc.get_freeze_count() == 0


def test_the_raised_young_threshold_still_collects_garbage_cycles():
    """Past GC_YOUNG_THRESHOLD net allocations the collector runs by itself: cycles made while
    serving (none of which reference counting frees) stay bounded, they do not pile up."""

    class Node:
        def __init__(self) -> None:
            self.me = self

    before = gc.get_threshold()
    try:
        freeze_heap()
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert gc.isenabled()
        for _ in range(5 * GC_YOUNG_THRESHOLD):
            Node()  # each a cycle: unreachable at once, freed only by the collector
        alive = sum(1 for o in gc.get_objects() if type(o) is Node)
        assert alive < 2 * GC_YOUNG_THRESHOLD, alive  # collected along the way, not 100,000 of them
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
