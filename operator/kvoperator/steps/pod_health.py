"""Pod health: repair pods that Kubernetes alone would leave broken.

* A pod stuck Terminating on a node that is NotReady (its kubelet cannot confirm the deletion) is
  force-deleted once ``stuck_terminating_grace`` has passed its deletion deadline, so that the
  StatefulSet can create it again elsewhere.
* A pod whose container is Running but whose node fails gRPC health checks for longer than
  ``unhealthy_pod_threshold`` is deleted, so that it restarts. Since when it fails is kept in the
  status (``podHealth[].failingSince``), so an operator restart does not start the count again. A
  node that is rebuilding a lost volume from its peers is NOT_SERVING on purpose: it counts as
  healthy and is left alone. Its rebuild is reported (events RebuildStarted and RebuildFinished,
  and ``kind="rebuild"`` in the repair metric), since the store runs on fewer replicas of its data
  until it ends.

At most one pod is repaired per pass, and each repair is an event and a metric. A pod that the
StatefulSet's rolling update has yet to replace is left to the rollout.
"""

from __future__ import annotations

from dataclasses import replace

from kvoperator import kube
from kvoperator.memory import PodRecord, RebuildReported
from kvoperator.node_admin import NodeHealth
from kvoperator.passes import Pass
from kvoperator.pods import PodView, cluster_node_ready


async def run(p: Pass) -> None:
    observed = p.observed
    config = p.ctx.config
    memory = p.memory
    for pod in sorted(observed.pods.values(), key=lambda pod: pod.ordinal):
        if pod.terminating:
            if config.stuck_terminating_grace > 0 and await _stuck(p, pod):
                await _force_delete(p, pod)
                return
            continue
        probe = observed.probes.get(pod.name)
        if not pod.running or probe is None:
            memory.healthy(pod.name)
            continue
        record = _report_rebuild(p, pod, probe, memory.pod(pod.name, pod.uid, pod.restart_count))
        if probe.rebuilding:
            p.report.progress("Rebuilding", f"{pod.name} is rebuilding its data from its peers")
        if probe.healthy or _outdated(p, pod):
            memory.healthy(pod.name)
            continue
        # A record is about one start of the container: a node the kubelet just restarted gets the
        # whole threshold to come up (its Python start and storage checks take seconds on a busy node).
        record = replace(record, failing_since=record.failing_since or p.now)
        memory.keep_pod(record)
        assert record.failing_since is not None
        failing = (p.now - record.failing_since).total_seconds()
        why = probe.error or probe.health.value
        p.report.degrade("MemberUnhealthy", f"{pod.name} fails health checks for {failing:.0f}s: {why}")
        if config.unhealthy_pod_threshold > 0 and failing >= config.unhealthy_pod_threshold:
            await _restart(p, pod, failing, why)
            memory.healthy(pod.name)
            return
    memory.forget_pods_except({pod.name for pod in observed.pods.values()})
    _report_readiness(p)


def _report_readiness(p: Pass) -> None:
    observed = p.observed
    members = observed.member_ids()  # pods of known members are not "starting", even if none answers
    ready = {pod.name for pod in observed.pods.values() if pod.ready}
    down = sorted(members - ready)
    if down and observed.membership is not None and observed.membership.epoch > 0:
        p.report.degrade("MembersNotReady", f"members whose pods are not Ready: {', '.join(down)}")
    starting = sorted(pod.name for pod in observed.pods.values() if not pod.ready and pod.name not in members)
    if starting:
        p.report.progress("PodsStarting", f"pods starting: {', '.join(starting)}")


async def _stuck(p: Pass, pod: PodView) -> bool:
    deadline = pod.deletion_timestamp
    assert deadline is not None
    overdue = (p.now - deadline).total_seconds()
    if overdue < p.ctx.config.stuck_terminating_grace:
        return False
    if pod.node_name is None:
        return True  # never scheduled: nothing can confirm its deletion
    node = await p.ctx.kube.get(kube.NODES, None, pod.node_name)
    return not cluster_node_ready(node)


async def _force_delete(p: Pass, pod: PodView) -> None:
    observed = p.observed
    await p.ctx.kube.delete(kube.PODS, observed.namespace, pod.name, grace_seconds=0, uid=pod.uid)
    overdue = (p.now - (pod.deletion_timestamp or p.now)).total_seconds()
    message = (
        f"force-deleted {pod.name}: Terminating for {overdue:.0f}s past its deadline on node "
        f"{pod.node_name or '(none)'}, which is NotReady"
    )
    p.report.wrote(message)
    p.ctx.metrics.repairs.labels(observed.namespace, observed.name, "force_delete_stuck").inc()
    p.ctx.events.warning(p.store, "ForceDeletedStuckPod", message)


def _outdated(p: Pass, pod: PodView) -> bool:
    """Whether the StatefulSet's rolling update is still to replace this pod. Such a pod is left to
    the rollout: after an upgrade that turns TLS on, the old pods are plaintext and fail the
    operator's TLS health checks, and restarting them too would take a second member away while the
    rollout restarts another."""
    status = (p.observed.statefulset or {}).get("status") or {}
    update = status.get("updateRevision")
    return bool(update and pod.revision and pod.revision != update)


async def _restart(p: Pass, pod: PodView, failing: float, why: str) -> None:
    observed = p.observed
    await p.ctx.kube.delete(kube.PODS, observed.namespace, pod.name, uid=pod.uid)
    message = (
        f"deleted {pod.name} to restart it: Running but failing gRPC health checks for {failing:.0f}s ({why})"
    )
    p.report.wrote(message)
    p.ctx.metrics.repairs.labels(observed.namespace, observed.name, "restart_unhealthy").inc()
    p.ctx.events.warning(p.store, "RestartedUnhealthyPod", message)


def _report_rebuild(p: Pass, pod: PodView, probe: NodeHealth, record: PodRecord) -> PodRecord:
    """Post RebuildStarted and RebuildFinished once per rebuild, and count it; returns the record
    with what was reported.

    A node reports its rebuild in ``Admin.Status``: ``rebuilding`` while it runs, and its transfer
    (kind ``rebuild``), which stays after it ends, so a rebuild that starts and ends between two
    passes (a small store rebuilds in milliseconds) is still seen. A rebuild is one start of the
    node container, as the record is. A new pod that is not yet a member holds no partitions
    (``partitions_total`` 0): that is no rebuild.
    """
    status = probe.status
    if status is None or status.transfer.kind != "rebuild" or status.transfer.partitions_total == 0:
        return record
    observed = p.observed
    transfer = status.transfer
    if record.rebuild is None:
        record = replace(record, rebuild=RebuildReported.STARTED)
        p.ctx.metrics.repairs.labels(observed.namespace, observed.name, "rebuild").inc()
        p.ctx.events.warning(
            p.store,
            "RebuildStarted",
            f"{pod.name} started with an empty data volume: it copies its {transfer.partitions_total} "
            "partitions from its peers and serves again once done",
        )
    if record.rebuild is RebuildReported.STARTED and not status.rebuilding:
        record = replace(record, rebuild=RebuildReported.FINISHED)
        p.ctx.events.normal(
            p.store,
            "RebuildFinished",
            f"{pod.name} rebuilt {transfer.partitions_done} of {transfer.partitions_total} partitions "
            f"from its peers ({transfer.records_copied} records) and serves again",
        )
    p.memory.keep_pod(record)
    return record
