"""Chaos testing for kvstore: a recorded workload, fault injection and a history checker.

* :mod:`e2e.chaos.workload`: client sessions over raw gRPC; one RPC is one recorded operation.
* :mod:`e2e.chaos.history`: the records, saved to and loaded from JSON.
* :mod:`e2e.chaos.checker` and :mod:`e2e.chaos.linearizability`: lost writes, convergence,
  read-your-writes and linearizability.
* :mod:`e2e.chaos.report`: text, JSON and a throughput-over-time plot with the faults marked.
* :mod:`e2e.chaos.faults`, :mod:`e2e.chaos.netns`, :mod:`e2e.chaos.proxy`: process faults, clock
  skew and network partitions for local kvnode processes.
* :mod:`e2e.chaos.cluster`: healing and convergence helpers that only need node endpoints.
* :mod:`e2e.chaos.scenario`: one chaos run, end to end, for the pytest scenarios.

docs/chaos.md explains how to run it and how the checker decides.
"""
