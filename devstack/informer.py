"""An informer cache: what controllers read instead of the API server, possibly stale.

Built from a store's watch events (``Store.events_since``). With ``lag`` an
event is applied only once it is that many seconds old, so readers see the
world as an informer on a busy cluster would: late, and missing their own
latest writes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from devstack.store import Event, Obj, Store, key_of


@dataclass
class Informer:
    store: Store
    lag: float = 0.0
    cursor: int = 0
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    # kind -> namespace -> name -> object: a lister's index (thousands of objects, many reads).
    _index: dict[str, dict[str, dict[str, Obj]]] = field(default_factory=dict)

    def poll(self) -> list[tuple[Event, Obj | None]]:
        """Apply the events old enough; returns each with the object it replaced."""
        _, events = self.store.events_since(self.cursor)
        cut = time.monotonic() - self.lag
        out: list[tuple[Event, Obj | None]] = []
        for ev in events:
            if ev.at > cut:
                break
            self.cursor += 1
            k = key_of(ev.obj)
            old = self.objects.get(k)
            by_ns = self._index.setdefault(k[0], {}).setdefault(k[1], {})
            if ev.type == "DELETED":
                self.objects.pop(k, None)
                by_ns.pop(k[2], None)
            else:
                self.objects[k] = ev.obj
                by_ns[k[2]] = ev.obj
            out.append((ev, old))
        return out

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        o = self.objects.get((kind, namespace, name))
        return copy.deepcopy(o) if o else None

    def list(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """Copies, sorted by (namespace, name), from the index: no scan of other kinds."""
        by_ns = self._index.get(kind) or {}
        spaces = [namespace] if namespace is not None else sorted(by_ns)
        return [copy.deepcopy(by_ns[ns][name]) for ns in spaces for name in sorted(by_ns.get(ns) or {})]
