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
- `engines.mini.engine` -- what the three engines share: settings, the
  cluster a session starts, the session around it.

The modes, each a runtime for the cluster, a driver and an engine; read a
mode's modules in the order given (the first is its architecture, as plain
data and verbs or as one generator; the rest are the shells around it):

``mini-data`` (data parallel): `engines.mini.dataparallel` -- every worker
runs every stage of the compiled plan (`engines.plan.compile`) on its
partitions and trades records by key over the mesh: `program` is the whole
architecture as one generator, `DataWorker` drives it, `drive` is the
driver; `engines.mini.recovery` -- snapshots at epoch boundaries and the
resume after a lost worker; `engines.mini.streams` -- windows kept open on
the workers while a stream's events flow.

``mini-tasks`` (task parallel): `engines.mini.scheduler` -- the task graph
and where each task runs, as plain data and verbs, with a worked example:
read it first; `engines.mini.taskworker` -- a worker: runs what is ready,
keeps the results, serves them to its peers; `engines.mini.taskparallel`
-- the driver's threads around the scheduler, the engine and session.

``mini-actors`` (actors): `engines.mini.messaging` -- the actor runtime's
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
