"""Plasma-style shared-memory object store.

Large immutable objects live in shared memory (normally under /dev/shm), one
file per object named after the object ID's hex, so any process on the node
can map them zero-copy.

* ``store.py`` (:class:`PlasmaStore`) runs inside the **raylet**, one per
  node.  It does all accounting: reserving space, sealing, LRU eviction of
  secondary copies, spilling primary copies to disk and restoring them.
  Its decisions come from the I/O-free ``policy.py`` (:class:`StorePolicy`).
* ``client.py`` runs in every **worker and driver**: it writes an object
  into the path the raylet reserved (:func:`create_and_write`) and maps
  sealed objects read-only (:func:`read`).  Talking to the raylet (reserve,
  seal, ensure-local) is the core worker's job, over RPC.
"""
from miniray.object_store.client import create_and_write, read, write_bytes
from miniray.object_store.policy import (
    Action, Evict, ObjectRecord, ObjectState, ObjectStoreFullError, Spill,
    StorePolicy, StoreStats)
from miniray.object_store.store import PlasmaStore

__all__ = [
    "PlasmaStore", "StorePolicy", "StoreStats", "ObjectRecord", "ObjectState",
    "Action", "Evict", "Spill", "ObjectStoreFullError",
    "create_and_write", "read", "write_bytes",
]
