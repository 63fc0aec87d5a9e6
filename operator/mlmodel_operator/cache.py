"""What the operator has made, as its watches last saw it: the children and their pods, by owner.

A pass reads its children and pods from here instead of listing them, so a steady ModelDeployment
costs no API request at all; a change to any of them (a pod turning ready, a hand edit) is seen
through the watch and queues a pass of its owner. No I/O: ``informer`` feeds it from ``kube.watch``.
"""

from __future__ import annotations

import heapq
import itertools
import json
import sys
import threading
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlmodel_operator import names

Obj = dict[str, Any]
Owner = tuple[str, str]  # namespace, ModelDeployment name
_POD_STATUS = ("phase", "conditions", "containerStatuses", "podIP")  # podIP: where a rollout reads a router pod


def trim(kind: str, obj: Mapping[str, Any]) -> Obj:
    """Only what a pass reads: no managedFields (the bulk of an object) but the operator's own on a
    Deployment (the replicas handover reads them), and of a pod only its metadata and the parts of
    its status that ``status.observe`` looks at."""
    meta = dict(obj["metadata"])
    ours = [m for m in meta.pop("managedFields", None) or [] if m.get("manager") == names.FIELD_MANAGER]
    if kind == "Deployment":
        meta["managedFields"] = ours
    if kind == "Pod":
        found = obj.get("status") or {}
        return {"metadata": meta, "status": {key: found[key] for key in _POD_STATUS if key in found}}
    return {**obj, "metadata": meta}


@dataclass(frozen=True)
class _Entry:
    """One object as the store keeps it: compact JSON (a fraction of the memory of its dicts), with
    what lookups need beside it."""

    version: int
    labels: Mapping[str, str]
    data: bytes

    @classmethod
    def of(cls, kind: str, obj: Mapping[str, Any]) -> _Entry:
        trimmed = trim(kind, obj)
        data = json.dumps(trimmed, separators=(",", ":"), sort_keys=True).encode()
        labels = trimmed["metadata"].get("labels") or {}
        # Thousands of objects share a handful of label keys and values: one string of each, not one per object.
        return cls(_version(trimmed), {sys.intern(k): sys.intern(v) for k, v in labels.items()}, data)


def owner(obj: Mapping[str, Any]) -> Owner | None:
    """The ModelDeployment an object of the operator's belongs to, by its labels."""
    meta = obj.get("metadata") or {}
    instance = (meta.get("labels") or {}).get(names.LABEL_INSTANCE)
    return (meta.get("namespace", ""), instance) if instance else None


def revision(resource_version: str | None) -> int:
    """A resourceVersion as a number, to order two versions of one object (0 if it is not one)."""
    try:
        return int(resource_version or 0)
    except ValueError:  # resourceVersions are opaque; the API server's are etcd revisions
        return 0


def _version(obj: Mapping[str, Any]) -> int:
    return revision(obj["metadata"].get("resourceVersion"))


class Names:
    """The names every object of a kind has, whoever made it (from metadata-only watches): a child
    whose name is not among them can be applied at once, without reading first whether it is
    someone else's. Safe to use from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, set[tuple[str, str]]] = {}  # kind -> (namespace, name); only listed kinds
        self._listed: dict[str, set[str | None]] = {}  # kind -> the namespaces listed (None: all)
        self._refused: set[str] = set()  # kinds whose last list was refused

    def replace(self, kind: str, namespace: str | None, items: Iterable[Obj]) -> set[Owner]:
        """Every object of ``kind`` (in ``namespace``, or everywhere) is now one of ``items``."""
        fresh = {_key(obj) for obj in items}
        with self._lock:
            kept = {key for key in self._names.get(kind, set()) if namespace is not None and key[0] != namespace}
            self._names[kind] = kept | fresh
            self._listed.setdefault(kind, set()).add(namespace)
            self._refused.discard(kind)
        return set()

    def put(self, kind: str, obj: Mapping[str, Any]) -> Owner | None:
        with self._lock:
            self._names.setdefault(kind, set()).add(_key(obj))
        return None

    def drop(self, kind: str, obj: Mapping[str, Any]) -> Owner | None:
        with self._lock:
            self._names.get(kind, set()).discard(_key(obj))
        return None

    def fail(self, kind: str, code: int, message: str) -> None:
        """A refused list: what is known of ``kind`` may be stale, so no name is vouched for."""
        with self._lock:
            self._refused.add(kind)

    def synced(self, kind: str) -> bool:
        """Listed, or refused (waiting longer would not help: passes read each child instead)."""
        with self._lock:
            return kind in self._listed or kind in self._refused

    def free(self, kind: str, namespace: str, name: str) -> bool:
        """No object of ``kind`` is called ``name`` in ``namespace``, as far as a successful list and the
        watch since tell (``False`` when it is not known)."""
        with self._lock:
            listed = self._listed.get(kind, set())
            known = (None in listed or namespace in listed) and kind not in self._refused
            return known and (namespace, name) not in self._names.get(kind, set())


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return sys.intern(meta.get("namespace", "")), meta["name"]


class Store:
    """Objects by kind and owner, and the ``names`` of all objects of the child kinds; safe to use
    from several threads."""

    def __init__(self) -> None:
        self.names = Names()
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict[str, _Entry]] = {}  # (kind, namespace, md) -> name -> object
        self._synced: set[str] = set()
        self._errors: dict[str, tuple[int, str]] = {}

    def replace(self, kind: str, namespace: str | None, items: Iterable[Obj]) -> set[Owner]:
        """Everything of ``kind`` (in ``namespace``, or everywhere) is now ``items``, as a fresh list said.
        Returns the owners whose objects changed."""
        fresh: dict[tuple[str, str, str], dict[str, _Entry]] = {}
        for obj in items:
            found = owner(obj)
            if found:
                fresh.setdefault((kind, *found), {})[obj["metadata"]["name"]] = _Entry.of(kind, obj)
        with self._lock:
            old = {
                key: value
                for key, value in self._objects.items()
                if key[0] == kind and (namespace is None or key[1] == namespace)
            }
            for key in old:
                del self._objects[key]
            self._objects.update(fresh)
            self._synced.add(kind)
            self._errors.pop(kind, None)
        return {(key[1], key[2]) for key in set(old) | set(fresh) if old.get(key) != fresh.get(key)}

    def put(self, kind: str, obj: Mapping[str, Any]) -> Owner | None:
        """Record ``obj`` unless a newer version is known; its owner, if that changed anything."""
        found = owner(obj)
        if found is None:
            return None
        entry = _Entry.of(kind, obj)
        with self._lock:
            bucket = self._objects.setdefault((kind, *found), {})
            name = obj["metadata"]["name"]
            known = bucket.get(name)
            if known is not None and (known.data == entry.data or known.version > entry.version):
                return None
            bucket[name] = entry
        return found

    def drop(self, kind: str, obj: Mapping[str, Any]) -> Owner | None:
        """Forget ``obj`` (deleted); its owner, if it was known."""
        found = owner(obj)
        if found is None:
            return None
        with self._lock:
            bucket = self._objects.get((kind, *found), {})
            gone = bucket.pop(obj["metadata"]["name"], None)
        return found if gone is not None else None

    def fail(self, kind: str, code: int, message: str) -> None:
        """The API server refused to list ``kind``: what is known of it may be stale until a list succeeds."""
        with self._lock:
            self._errors[kind] = (code, message)

    def error(self, kind: str) -> tuple[int, str] | None:
        """The code and message of the last refused list of ``kind``, until a list succeeds."""
        with self._lock:
            return self._errors.get(kind)

    def synced(self, kind: str) -> bool:
        """A list of ``kind`` has succeeded (or been refused: waiting longer would not help)."""
        with self._lock:
            return kind in self._synced or kind in self._errors

    def list_objects(self, api_version: str, kind: str, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
        """Objects of ``kind`` in ``namespace`` that carry all ``labels`` (which name their ModelDeployment)."""
        with self._lock:
            bucket = self._objects.get((kind, namespace, labels[names.LABEL_INSTANCE]), {})
            found = [entry.data for entry in bucket.values() if labels.items() <= entry.labels.items()]
        return [json.loads(data) for data in found]


class WorkQueue:
    """Keys to reconcile, each at most once in the queue and never handed to two workers at once: a key
    added while a worker has it is queued again when the worker is done (as client-go's workqueue).
    A key may be added with a delay, so that a burst of changes to one owner (a Deployment, its
    ReplicaSet and its pods, all within a second) makes one pass; adding it again keeps the earlier
    time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Hashable, float] = {}  # queued key -> when it may be handed out
        self._heap: list[tuple[float, int, Hashable]] = []  # (due, order, key), with stale entries
        self._order = itertools.count()
        self._active: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}  # added while active -> due

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        due = time.monotonic() + delay
        with self._cond:
            if key in self._active:
                self._again[key] = min(due, self._again.get(key, due))
            else:
                self._queue(key, due)

    def _queue(self, key: Hashable, due: float) -> None:
        if key not in self._due or due < self._due[key]:
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._order), key))
            self._cond.notify()

    def get(self, timeout: float) -> Hashable | None:
        """The next key that is due (now this worker's until ``done``), or ``None`` after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # re-added earlier, or handed out
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    key = heapq.heappop(self._heap)[2]
                    del self._due[key]
                    self._active.add(key)
                    return key
                wait = min(end, self._heap[0][0] if self._heap else end) - now
                if end <= now:
                    return None
                self._cond.wait(wait)

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._active.discard(key)
            if key in self._again:
                self._queue(key, self._again.pop(key))
