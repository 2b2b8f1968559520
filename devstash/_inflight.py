"""Keys being computed in this process, so that a second thread or asyncio
task that misses the same key waits for the first one's value instead of
computing it again. (Processes wait for each other through the claims file,
see csrc/claims.c; threads of one process share its locks, so they need
this.) Made on the first miss: most runs never import threading for it."""
import threading


class InFlight:
    def __init__(self):
        self._lock = threading.Lock()
        self._events = {}   # key -> (owner thread id, threading.Event)
        self._tasks = {}    # (event loop, key) -> asyncio.Event

    def begin(self, key):
        """None: the calling thread computes `key` (call end(key) after).
        Otherwise an Event that is set when the thread computing it is done."""
        me = threading.get_ident()
        with self._lock:
            entry = self._events.get(key)
            if entry is None:
                self._events[key] = (me, threading.Event())
                return None
            owner, event = entry
            return None if owner == me else event   # re-entered: compute

    def end(self, key) -> None:
        me = threading.get_ident()
        with self._lock:
            entry = self._events.get(key)
            if entry is None or entry[0] != me:
                return
            del self._events[key]
        entry[1].set()

    async def abegin(self, key):
        """As begin, for asyncio tasks of one event loop: an asyncio.Event to
        await without blocking the loop, or None to compute."""
        import asyncio

        loop = asyncio.get_running_loop()
        event = self._tasks.get((loop, key))
        if event is None:
            self._tasks[(loop, key)] = asyncio.Event()
            return None
        return event

    def aend(self, key) -> None:
        import asyncio

        event = self._tasks.pop((asyncio.get_running_loop(), key), None)
        if event is not None:
            event.set()


_inflight = None


def inflight() -> InFlight:
    global _inflight
    if _inflight is None:
        _inflight = InFlight()
    return _inflight
