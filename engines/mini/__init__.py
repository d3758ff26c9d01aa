"""archbench's minimal engine: one substrate, three architectures on it.

Read the modules in this order; each opens with what it does, why, its
state and a worked example.

The substrate (shared by every mode):

- `engines.mini.wire` -- length-prefixed frames with a header decoded
  before trust, batches of messages pickled together (protocol 5, out-of-band
  buffers; cloudpickle for code), a frame-size cap.
- `engines.mini.auth` -- the HMAC-SHA256 challenge every connection passes
  before anything from it is unpickled; where the secret comes from.
- `engines.mini.cluster` -- `Host` starts worker processes (spawned, never
  forked), meshes them, watches heartbeats, stops them cleanly; each worker
  runs a pluggable **runtime** that handles messages. `InProcessHost` runs
  the same runtimes as objects in one process: the deterministic form.
- `engines.mini.trace` -- the event rows (spans, bytes sent) every runtime
  records, and the questions asked of them.

The modes (each a runtime for the cluster, a driver loop and an engine):

- `engines.mini.dataparallel` -- ``mini-data``: every worker runs every step
  on its partitions and trades records by key over the mesh.
- ``mini-tasks`` and ``mini-actors`` -- a scheduler dispatching tasks to the
  same workers, and actors hosted in them.

``mini-actors``, in order: `engines.mini.messaging` -- the actor runtime's
state as plain data and verbs (routes, mailboxes and the order per sender,
credit, calls, supervision), no I/O, with a worked example: read it first;
`engines.mini.endpoint` -- the thin shell every process has around that
state (a lock, pickled payloads, batched frames, the ref and the call
Future); `engines.mini.actorworker` -- a worker: a thread per actor, or
actors in turn in one process; `engines.mini.actordriver` -- the driver's
side; `engines.mini.actors` -- the engine and session;
`engines.mini.operators` -- dataflows and tasks on actors.

A new mode is a class ``Runtime(ctx, **options)`` with ``handle(source,
message)`` (see `engines.mini.cluster` for ``ctx``), started with
``Host(workers, "module:Runtime")`` or ``InProcessHost(workers, Runtime)``,
and a driver loop over ``host.send`` / ``host.recv``.

`engines.mini.run` runs a flow module from the command line, as Bytewax's
run script does: ``python -m engines.mini.run my_flow -w 2``.
"""
