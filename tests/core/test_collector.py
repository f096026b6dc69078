"""The shared pause of the cyclic garbage collector (apps.core.collector)."""
import gc
import threading

from apps.core.collector import cyclic_gc_paused


def test_the_collector_pause_ends_with_the_last_pauser():
    assert gc.isenabled()
    inner_started, release = threading.Event(), threading.Event()

    def other_fold() -> None:
        with cyclic_gc_paused():
            inner_started.set()
            release.wait(5)

    with cyclic_gc_paused():
        thread = threading.Thread(target=other_fold)
        thread.start()
        inner_started.wait(5)
        assert not gc.isenabled()
    assert not gc.isenabled(), "another pauser of the process is still running"
    release.set()
    thread.join(5)
    assert gc.isenabled()
    gc.disable()
    try:
        with cyclic_gc_paused():
            pass
        assert not gc.isenabled(), "a collector disabled before stays disabled"
    finally:
        gc.enable()
