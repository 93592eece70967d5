"""The gateway process freezes its startup heap (gc.freeze) and thaws it on a reload, so the
replaced config can be collected."""

from __future__ import annotations

import gc

from bastion.gateway.server import freeze_heap, thaw_after_reload


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
