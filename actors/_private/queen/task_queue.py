"""TaskQueue: a queen's waiting tasks, one priority heap per capability, with their counts.

Higher priority pops first; equal priorities pop in the order they were pushed. Removing a
task from the middle of a heap (it was cancelled, or rerouted to another swarm) would cost
O(n), so removal is lazy: the task leaves the live set at once and its heap entry is skipped
when it reaches the top. The counts follow the live set, never the heaps, and only this class
changes either, so a count cannot drift from what `pop` will hand out.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter

__all__ = ["TaskQueue"]


class TaskQueue:
    """Task ids waiting for an agent, by capability; plain Python, for one event loop."""

    def __init__(self) -> None:
        self._heaps: dict[str, list[tuple[int, int, str]]] = {}  # cap -> (-priority, seq, id)
        self._live: dict[str, tuple[str, int]] = {}  # id -> (cap, seq) of its one live entry
        self._depth: Counter[str] = Counter()
        self._seq = itertools.count()  # FIFO among equal priorities

    def __len__(self) -> int:
        """Tasks waiting, over every capability."""
        return len(self._live)

    def __contains__(self, task_id: object) -> bool:
        """Whether the task waits in the queue."""
        return task_id in self._live

    def depth(self, capability: str) -> int:
        """Tasks waiting for `capability`."""
        return self._depth[capability]

    def depths(self) -> dict[str, int]:
        """Tasks waiting per capability, for capabilities with any, by name."""
        return {c: n for c, n in sorted(self._depth.items()) if n}

    def push(self, task_id: str, capability: str, priority: int = 0) -> None:
        """Queues a task behind those of its priority and ahead of any lower one.

        A task already waiting is moved, not counted twice: its old entry goes stale.
        """
        if task_id in self._live:
            self.remove(task_id)
        seq = next(self._seq)
        heapq.heappush(self._heaps.setdefault(capability, []), (-priority, seq, task_id))
        self._live[task_id] = (capability, seq)
        self._depth[capability] += 1

    def pop(self, capability: str) -> str | None:
        """Takes the next task for `capability` off the queue; None when none waits."""
        heap = self._heaps.get(capability)
        while heap:
            _, seq, task_id = heapq.heappop(heap)
            if self._live.get(task_id) != (capability, seq):
                continue  # removed (or pushed again) since this entry was made
            del self._live[task_id]
            self._depth[capability] -= 1
            return task_id
        return None

    def remove(self, task_id: str) -> bool:
        """Takes a task off the queue wherever it is; returns whether it was waiting."""
        entry = self._live.pop(task_id, None)
        if entry is None:
            return False
        self._depth[entry[0]] -= 1
        return True

    def waiting(self, capability: str) -> list[str]:
        """The ids waiting for `capability`, in the order `pop` would hand them out."""
        heap = self._heaps.get(capability, [])
        return [tid for _, seq, tid in sorted(heap) if self._live.get(tid) == (capability, seq)]
