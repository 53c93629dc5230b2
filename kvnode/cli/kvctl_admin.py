"""kvctl subcommands that administer a cluster without Kubernetes: membership changes, backups and
restores. They drive the same Admin calls the operator uses."""

from __future__ import annotations

import argparse
import asyncio
import sys

from kvnode.cli import kvctl_output as out
from kvnode.cli.kvctl_core import EXIT_FAILED, EXIT_OK, Session, command
from kvnode.client.reconfig import Reconfigurer, describe
from kvnode.config import parse_peers
from kvnode.core.membership import Member, Membership
from kvnode.core.names import new_backup_id


def _progress(message: str) -> None:
    print(f"kvctl: {message}", file=sys.stderr, flush=True)


def _member_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "add", "remove"), help="what to do")
    parser.add_argument(
        "member", nargs="?", default="", help="add: ID=HOST:PORT of a running node; remove: ID"
    )


def _member_json(member: Member) -> dict[str, str]:
    return {
        "id": member.id,
        "address": member.address,
        "state": member.state.name,
        "peer_address": member.peer_address,
    }


@command("member", "list the members, or add or remove one (data moves first)", _member_args)
def member(args: argparse.Namespace, session: Session) -> int:
    membership = asyncio.run(_change_members(args.action, args.member, session))
    if session.json:
        out.emit_json(
            {
                "epoch": membership.epoch,
                "replication_factor": membership.replication_factor,
                "partitions": membership.partitions,
                "members": [_member_json(m) for m in membership.members],
            }
        )
    else:
        out.emit_line(f"epoch {membership.epoch}: {describe(membership)}")
        for m in membership.members:
            peer = f"\tpeers at {m.peer_address}" if m.peer_address else ""
            out.emit_line(f"{m.id}\t{m.address}\t{m.state.name}{peer}")
    return EXIT_OK


async def _change_members(action: str, target: str, session: Session) -> Membership:
    async with Reconfigurer.connect(
        session.endpoints,
        timeout=session.args.timeout,
        progress=_progress,
        credentials=session.credentials,
    ) as reconfig:
        if action == "list":
            return await reconfig.current()
        if action == "add":
            if "=" not in target:
                raise ValueError("member add needs ID=HOST:PORT[/PEERPORT], e.g. kv-3=127.0.0.1:7003")
            (peer,) = parse_peers(target)
            peer_address = peer.peer_address if peer.peer_address != peer.address else ""
            return await reconfig.add(peer.node_id, peer.address, peer_address)
        if not target:
            raise ValueError("member remove needs the member's ID")
        return await reconfig.remove(target)


BACKUP_ACTIONS = ("create", "list", "verify", "delete")


def _backup_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "words", nargs="*", metavar="[ACTION] [ID]",
        help="create (the default) [ID], list, verify ID or delete ID; ID defaults to a timestamp",
    )  # fmt: skip
    parser.add_argument("--dir", required=True, help="backup directory, as the nodes see it")


def _backup_action(words: list[str]) -> tuple[str, str]:
    """``[]``, ``[ID]``, ``[ACTION]`` or ``[ACTION, ID]`` -> (action, id)."""
    action, rest = (words[0], words[1:]) if words and words[0] in BACKUP_ACTIONS else ("create", words)
    if len(rest) > 1:
        raise ValueError(f"backup takes an action and one id, not {' '.join(words)!r}")
    return action, rest[0] if rest else ""


@command(
    "backup", "take, list, verify or delete cluster backups (snapshots on the nodes' disks)", _backup_args
)
def backup(args: argparse.Namespace, session: Session) -> int:
    admin = session.client.admin
    action, backup_id = _backup_action(args.words)
    if action == "list":
        backups = admin.list_backups(args.dir).backups
        if session.json:
            rows = [
                {
                    "backup_id": b.backup_id,
                    "nodes": list(b.node_ids),
                    "created_unix": b.created_unix,
                    "keys": b.keys,
                }
                for b in backups
            ]
            out.emit_json({"backups": rows})
        else:
            for b in backups:
                out.emit_line(f"{b.backup_id}\t{len(b.node_ids)} nodes\t{b.keys} keys")
        return EXIT_OK
    if action in ("verify", "delete") and not backup_id:
        raise ValueError(f"backup {action} needs a backup id")
    if action == "delete":
        deleted = admin.delete_backup(args.dir, backup_id)
        out.emit_line("deleted" if deleted else "no such backup")
        return EXIT_OK
    backup_id = backup_id or new_backup_id()
    if action == "create":
        membership = admin.membership()
        for m in membership.members:
            manifest = admin.backup(m.address, args.dir, backup_id)
            _progress(f"{m.id}: {manifest.keys} keys, {manifest.size_bytes} bytes")
    verdict = admin.verify_backup(args.dir, backup_id)
    if session.json:
        out.emit_json(
            {
                "backup_id": backup_id,
                "ok": verdict.ok,
                "problems": list(verdict.problems),
                "nodes": [
                    {"node_id": m.node_id, "keys": m.keys, "sha256": m.sha256} for m in verdict.manifests
                ],
            }
        )
    else:
        state = "verified" if verdict.ok else "FAILED verification"
        out.emit_line(f"backup {backup_id}: {len(verdict.manifests)} node snapshots, {state}")
    for problem in verdict.problems:
        out.error(problem)
    return EXIT_OK if verdict.ok else EXIT_FAILED


def _restore_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup_id", help="the backup to replay")
    parser.add_argument("--dir", required=True, help="backup directory, as the nodes see it")


@command("restore", "replay a backup into the cluster, keeping the original versions", _restore_args)
def restore(args: argparse.Namespace, session: Session) -> int:
    result = session.client.admin.restore(args.dir, args.backup_id, consistency=session.args.consistency)
    if session.json:
        out.emit_json({"backup_id": args.backup_id, "records": result.records, "keys": result.keys})
    else:
        out.emit_line(f"restored {result.keys} keys ({result.records} records replayed)")
    return EXIT_OK
