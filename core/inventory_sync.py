"""INVENTORY_SOURCE=awx: the fleet as the customer's AWX holds it, synced into PostgreSQL.

A sync reads each inventory named in AWX_INVENTORY with one request (AWX's inventory script: every group with its
direct hosts and child groups, and every host's variables and `enabled`), checks the job templates the patch groups
name, and stores the result as a snapshot row. The parser and the validator serve the newest good snapshot: one
`Catalog` per snapshot, kept in memory, so a chat turn reads nothing but a cheap "newest snapshot id" at most every
`CHECK_EVERY_SECONDS`. A failed sync is recorded too and leaves the last good snapshot in service.
The patch groups and the policy stay files (PATCH_GROUPS_FILE, POLICY_FILE); a name the policy gives that the
synced inventory lacks is a warning of the sync, not a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from core.inventory import Catalog, Host, Inventory, PatchGroup, load_patch_groups
from core.policy import Policy, PolicyError, load_policy

if TYPE_CHECKING:
    from core.settings import Settings
    from worker.awx_client import AWXClient

log = logging.getLogger("patchpilot.inventory")

CHECK_EVERY_SECONDS = 2.0  # how stale a process' idea of "the newest snapshot" may be
KEEP_SNAPSHOTS = 5  # good snapshots kept (failed attempts newer than the oldest kept one stay too)
AWX_HOST_VARS = ("remote_tower_enabled", "remote_tower_id", "remote_host_enabled", "remote_host_id")


class InventoryNotSynced(RuntimeError):
    """INVENTORY_SOURCE=awx and no sync has succeeded yet: nothing can be proposed."""


# --------------------------------------------------------------------------------------------- conversion


def inventory_from_script(data: dict[str, Any]) -> Inventory:
    """An `Inventory` from AWX's inventory script JSON (`ansible-inventory --list` shape): groups with their direct
    `hosts` and `children`, `_meta.hostvars`. Disabled hosts (towervars' `remote_tower_enabled: "false"`) are kept,
    marked `enabled=False`, so that a reply can say why they are left out."""
    if not isinstance(data, dict):
        raise ValueError("the inventory script is not a JSON object")
    meta = data.get("_meta") or {}
    hostvars: dict[str, dict[str, Any]] = meta.get("hostvars") or {}
    direct: dict[str, set[str]] = {}
    children: dict[str, set[str]] = {}
    for group, body in data.items():
        if group == "_meta":
            continue
        if isinstance(body, list):  # the short form: a group is a list of hosts
            direct[group] = {str(h) for h in body}
            continue
        body = body or {}
        direct[group] = {str(h) for h in body.get("hosts") or ()}
        children[group] = {str(c) for c in body.get("children") or ()}
    for kids in children.values():
        for kid in kids:
            direct.setdefault(kid, set())

    expanded: dict[str, frozenset[str]] = {}

    def expand(group: str, path: frozenset[str]) -> frozenset[str]:
        if group in expanded:
            return expanded[group]
        found = set(direct.get(group, ()))
        for child in children.get(group, ()):
            if child not in path:
                found |= expand(child, path | {group})
        expanded[group] = frozenset(found)
        return expanded[group]

    for group in direct:
        expand(group, frozenset())
    names = set(hostvars)
    for members in direct.values():
        names |= members
    membership: dict[str, set[str]] = {name: set() for name in names}
    for group, grouped in expanded.items():
        if group in ("all", "ungrouped"):
            continue
        for name in grouped:
            membership[name].add(group)
    groups = dict(expanded)
    groups["all"] = frozenset(names)
    hosts: dict[str, Host] = {}
    for name in names:
        host_vars = dict(hostvars.get(name) or {})
        enabled = str(host_vars.get("remote_tower_enabled", "true")).lower() != "false"
        for key in AWX_HOST_VARS:
            host_vars.pop(key, None)
        hosts[name] = Host(name=name, groups=frozenset(membership[name]), vars=host_vars, enabled=enabled)
    return Inventory(hosts=hosts, groups=groups)


def merge_scripts(scripts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several inventories as one: groups of the same name are one group; a host in two keeps the later vars."""
    if len(scripts) == 1:
        return scripts[0]
    merged: dict[str, Any] = {"_meta": {"hostvars": {}}}
    for script in scripts:
        for group, body in script.items():
            if group == "_meta":
                merged["_meta"]["hostvars"].update((body or {}).get("hostvars") or {})
                continue
            body = {"hosts": body} if isinstance(body, list) else (body or {})
            into = merged.setdefault(group, {"hosts": [], "children": []})
            for key in ("hosts", "children"):
                known = set(into[key])
                into[key].extend(x for x in body.get(key) or () if x not in known)
    return merged


# --------------------------------------------------------------------------------------------- checks


def policy_warnings(policy: Policy, inventory: Inventory, patch_groups: dict[str, PatchGroup]) -> list[str]:
    """What the policy names that the synced inventory lacks (with a file inventory these stop the start)."""
    warnings = []
    unknown = sorted(set(policy.never_patch_hosts) - set(inventory.hosts))
    if unknown:
        warnings.append(f"policy: never_patch_hosts names hosts not in the AWX inventory: {', '.join(unknown)}")
    unknown = sorted((set(policy.environments) | set(policy.production_environments)) - set(inventory.groups))
    if unknown:
        warnings.append(f"policy: environments that are not groups of the AWX inventory: {', '.join(unknown)}")
    unknown = sorted(set(policy.reboot_allowed) - set(patch_groups))
    if unknown:
        warnings.append(f"policy: reboot_allowed names unknown patch groups: {', '.join(unknown)}")
    return warnings


def template_problems(client: AWXClient, patch_groups: dict[str, PatchGroup], inventory_ids: set[int],
                      default_template: str | None = None) -> list[str]:
    """Every job template a patch group maps to (by name and organization) must exist, prompt on launch for the
    limit, the variables and the job type, not be sliced, and run on a synced inventory."""
    from worker.awx_client import AWXError

    uses: dict[tuple[str, str | None], list[str]] = {}
    for group in patch_groups.values():
        uses.setdefault((group.job_template, group.organization), []).append(group.name)
    if default_template and not any(name == default_template for name, _ in uses):
        uses[(default_template, None)] = ["pre-checks without a patch group (AWX_DEFAULT_JOB_TEMPLATE)"]
    problems = []
    for (name, organization), groups in uses.items():
        who = f"job template {name!r}" + (f" of organization {organization!r}" if organization else "")
        used_by = f" (used by {', '.join(groups)})"
        try:
            template = client.find_job_template(name, organization)
            needs = client.launch_requirements(int(template["id"]))
        except AWXError as exc:
            problems.append(f"{who}{used_by}: {exc}")
            continue
        missing = [label for label, flag in (("limit", "ask_limit_on_launch"), ("variables", "ask_variables_on_launch"),
                                             ("job type", "ask_job_type_on_launch")) if not needs.get(flag)]
        if missing:
            problems.append(f"{who}{used_by} does not prompt on launch for {', '.join(missing)}: launches are "
                            "refused until 'Prompt on launch' is ticked for them")
        slices = int(template.get("job_slice_count") or 1)
        if slices > 1:
            problems.append(f"{who}{used_by} is sliced (job_slice_count {slices}): AWX would launch a workflow job, "
                            "which patchpilot cannot follow yet; launches are refused")
        inventory = template.get("inventory")
        if inventory is not None and inventory_ids and int(inventory) not in inventory_ids:
            problems.append(f"{who}{used_by} runs on inventory {inventory}, not on the synced one(s) "
                            f"({', '.join(str(i) for i in sorted(inventory_ids))}): its hosts are not the ones "
                            "patchpilot validates against")
    return problems


# --------------------------------------------------------------------------------------------- sync


@dataclass(frozen=True)
class SyncResult:
    ok: bool
    snapshot_id: int | None
    hosts: int = 0
    groups: int = 0
    disabled_hosts: int = 0
    seconds: float = 0.0
    problems: tuple[str, ...] = ()
    error: str | None = None


def _inventory_names(settings: Settings) -> list[str]:
    return [name.strip() for name in (settings.awx_inventory or "").split(",") if name.strip()]


def _files(settings: Settings) -> tuple[dict[str, PatchGroup], Policy]:
    patch_groups = load_patch_groups(Path(settings.patch_groups_file))
    policy_path = Path(settings.policy_file) if settings.policy_file else None
    policy = load_policy(policy_path, known_groups=set(patch_groups))
    return patch_groups, policy


def sync_inventory(client: AWXClient | None = None) -> SyncResult:
    """Read the AWX inventories, check the templates and store a snapshot (or the failure). Never raises for an
    AWX or data problem: the result says what happened, and the last good snapshot stays in service."""
    from core.db import session_scope
    from core.models import InventorySnapshot, utcnow
    from core.settings import get_settings
    from worker.awx_client import AWXClient, AWXError

    settings = get_settings()
    started_at, started = utcnow(), time.perf_counter()
    own_client = client is None
    try:
        names = _inventory_names(settings)
        if not names:
            raise ValueError("AWX_INVENTORY is empty: name the AWX inventory (name or id, comma-separated)")
        client = client or AWXClient.from_settings(settings)
        scripts, ids, sources = [], set(), []
        for name in names:
            found = client.find_inventory(name)
            ids.add(int(found["id"]))
            sources.append(f"{found.get('name', name)} (id {found['id']})")
            scripts.append(client.inventory_script(int(found["id"])))
        data = merge_scripts(scripts)
        inventory = inventory_from_script(data)
        if not inventory.hosts:
            raise ValueError(f"the AWX inventory {', '.join(sources)} has no hosts")
        patch_groups, policy = _files(settings)
        problems = template_problems(client, patch_groups, ids, settings.awx_default_job_template)
        problems += policy_warnings(policy, inventory, patch_groups)
    except (AWXError, ValueError, TypeError, KeyError, PolicyError, OSError) as exc:
        error = str(exc) or exc.__class__.__name__
        with session_scope() as session:
            row = InventorySnapshot(started_at=started_at, finished_at=utcnow(), ok=False,
                                    source=", ".join(_inventory_names(settings))[:500], error=error)
            session.add(row)
            session.flush()
            snapshot_id = row.id
        log.error("inventory sync from AWX failed (attempt %s): %s; the last good snapshot stays in service",
                  snapshot_id, error)
        return SyncResult(ok=False, snapshot_id=None, seconds=time.perf_counter() - started, error=error)
    finally:
        if own_client and client is not None:
            client.close()
    disabled = sum(1 for host in inventory.hosts.values() if not host.enabled)
    groups = len([g for g in inventory.groups if g not in ("all", "ungrouped")])
    with session_scope() as session:
        previous = session.execute(select(InventorySnapshot).where(col(InventorySnapshot.ok))
                                   .order_by(col(InventorySnapshot.id).desc()).limit(1)).scalar()
        if previous is not None and previous.data == data and previous.source == ", ".join(sources)[:500]:
            # Nothing changed in AWX: the snapshot stays the same one (no process rebuilds its catalog), and
            # its time says when AWX was last read.
            previous.finished_at, previous.problems = utcnow(), problems
            snapshot_id, unchanged = previous.id, True
        else:
            row = InventorySnapshot(started_at=started_at, finished_at=utcnow(), ok=True,
                                    source=", ".join(sources)[:500], hosts=len(inventory.hosts), groups=groups,
                                    disabled_hosts=disabled, data=data, problems=problems)
            session.add(row)
            session.flush()
            snapshot_id, unchanged = row.id, False
            _prune(session)
    seconds = time.perf_counter() - started
    log.info("inventory synced from AWX: snapshot %s%s, %d hosts (%d disabled), %d groups from %s in %.2f s",
             snapshot_id, " (unchanged)" if unchanged else "", len(inventory.hosts), disabled, groups,
             ", ".join(sources), seconds)
    for problem in problems:
        log.warning("inventory sync: %s", problem)
    return SyncResult(ok=True, snapshot_id=snapshot_id, hosts=len(inventory.hosts), groups=groups,
                      disabled_hosts=disabled, seconds=seconds, problems=tuple(problems))


def _prune(session: Session) -> None:
    from core.models import InventorySnapshot

    snapshot_id = col(InventorySnapshot.id)
    kept = session.execute(select(snapshot_id).where(col(InventorySnapshot.ok))
                           .order_by(snapshot_id.desc()).offset(KEEP_SNAPSHOTS - 1).limit(1)).scalar()
    if kept is not None:
        session.execute(delete(InventorySnapshot).where(snapshot_id < kept))


# --------------------------------------------------------------------------------------------- serving


_lock = threading.Lock()
_served: dict[str, Any] = {"id": None, "catalog": None, "checked": 0.0, "building": None, "generation": 0}


def _catalog(snapshot_id: int, inventory: Inventory, settings: Settings) -> Catalog:
    patch_groups, policy = _files(settings)
    return Catalog(inventory=inventory, patch_groups=patch_groups, policy=policy, snapshot_id=snapshot_id)


def _remember(snapshot_id: int, catalog: Catalog, generation: int | None = None) -> None:
    with _lock:
        if generation is not None and generation != _served["generation"]:
            return  # built for a state that was forgotten meanwhile
        if _served["id"] is None or snapshot_id >= _served["id"]:
            _served.update(id=snapshot_id, catalog=catalog, checked=time.monotonic())


def forget() -> None:
    """Drop the served catalog (tests switch databases and settings)."""
    with _lock:
        _served.update(id=None, catalog=None, checked=0.0, building=None, generation=_served["generation"] + 1)


def latest_good_id() -> int | None:
    from core.db import get_engine
    from core.models import InventorySnapshot

    with get_engine().connect() as conn:
        newest: int | None = conn.execute(select(func.max(col(InventorySnapshot.id)))
                                          .where(col(InventorySnapshot.ok))).scalar()
        return newest


def current_catalog(*, fresh: bool = False) -> Catalog:
    """The catalog of the newest good snapshot, one per snapshot.

    Once a process serves a catalog, a chat turn never waits on PostgreSQL or on a build: at most every
    CHECK_EVERY_SECONDS a background thread asks for the newest snapshot id and, when it is new, builds its catalog
    and vocabulary (a 10,000-host vocabulary takes seconds) while chat goes on with the one served. Only the first
    catalog of a process, and a `fresh` read (the launch re-check: the newest snapshot, now), are read in the
    caller's thread."""
    from core.settings import get_settings

    catalog: Catalog | None = _served["catalog"]
    if catalog is not None and not fresh:
        if time.monotonic() - _served["checked"] >= CHECK_EVERY_SECONDS:
            _served["checked"] = time.monotonic()
            _refresh_in_background()
        return catalog
    try:
        newest = latest_good_id()
    except Exception as exc:
        if catalog is not None:
            log.warning("cannot ask PostgreSQL for the newest inventory snapshot (%s); serving snapshot %s",
                        exc.__class__.__name__, _served["id"])
            return catalog
        raise
    if newest is None:
        raise InventoryNotSynced("no inventory has been synced from AWX yet (INVENTORY_SOURCE=awx): run "
                                 "`patchpilot inventory sync`, or wait for the worker's beat")
    if catalog is not None and newest == _served["id"]:
        return catalog
    built = load_snapshot(newest, get_settings())
    _remember(newest, built)
    return built


def _refresh_in_background() -> None:
    """Ask for the newest snapshot and build its catalog, vocabulary included, off the caller's thread."""
    from core.settings import get_settings

    with _lock:
        if _served["building"]:
            return
        _served["building"] = True
    settings, generation = get_settings(), _served["generation"]

    def refresh() -> None:
        try:
            newest = latest_good_id()
            if newest is not None and newest != _served["id"]:
                catalog = load_snapshot(newest, settings)
                _ = catalog.vocabulary  # derived here, once, not in a chat turn
                _remember(newest, catalog, generation)
                log.info("serving inventory snapshot %s", newest)
        except Exception as exc:
            log.warning("could not refresh the inventory snapshot (%s: %s); serving snapshot %s",
                        exc.__class__.__name__, exc, _served["id"])
        finally:
            with _lock:
                if generation == _served["generation"]:
                    _served["building"] = None

    threading.Thread(target=refresh, name="inventory-snapshot", daemon=True).start()


def load_snapshot(snapshot_id: int, settings: Settings) -> Catalog:
    from core.db import session_scope
    from core.models import InventorySnapshot

    with session_scope() as session:
        data = session.execute(select(col(InventorySnapshot.data))
                               .where(col(InventorySnapshot.id) == snapshot_id)).scalar()
    return _catalog(snapshot_id, inventory_from_script(data or {}), settings)


def recheck_hosts(hosts: list[str], validated_against: int | None) -> str | None:
    """At launch: does every host still exist in the newest inventory, and may it still be patched from chat?
    Returns the reason to refuse, or None."""
    from core.inventory import get_catalog
    from core.settings import get_settings

    catalog = current_catalog(fresh=True) if get_settings().inventory_source == "awx" else get_catalog()
    gone = [h for h in hosts if h not in catalog.inventory.hosts]
    refused = {h: reason for h in hosts if h not in gone and (reason := catalog.refusal_reason(h)) is not None}
    if not gone and not refused:
        return None
    where = (f"inventory snapshot {catalog.snapshot_id}" if catalog.snapshot_id is not None else "the inventory")
    since = (f" (the proposal was validated against snapshot {validated_against})"
             if validated_against is not None and validated_against != catalog.snapshot_id else "")
    parts = []
    if gone:
        parts.append(f"{', '.join(gone)} {'is' if len(gone) == 1 else 'are'} no longer in the AWX inventory")
    for reason in sorted(set(refused.values())):
        names = [h for h, r in refused.items() if r == reason]
        said = reason if len(names) == 1 else reason.replace("is ", "are ", 1)
        parts.append(f"{', '.join(names)} {said}")
    return f"refused to launch: {'; '.join(parts)} ({where}{since}); ask again with the hosts as they are now"


# --------------------------------------------------------------------------------------------- status


def sync_status() -> dict[str, Any]:
    """For /api/v1/system and the UI's status line."""
    from core.db import get_engine
    from core.models import InventorySnapshot
    from core.settings import get_settings

    settings = get_settings()
    if settings.inventory_source != "awx":
        return {"source": "file", "state": "ok", "file": str(settings.inventory_file)}
    snapshot = InventorySnapshot
    cols = (col(snapshot.id), col(snapshot.ok), col(snapshot.finished_at), col(snapshot.source), col(snapshot.hosts),
            col(snapshot.groups), col(snapshot.disabled_hosts), col(snapshot.problems), col(snapshot.error))
    newest_first = col(snapshot.id).desc()
    with get_engine().connect() as conn:
        last = conn.execute(select(*cols).order_by(newest_first).limit(1)).first()
        good = conn.execute(select(*cols).where(col(snapshot.ok)).order_by(newest_first).limit(1)).first()
    status: dict[str, Any] = {"source": "awx", "inventories": _inventory_names(settings),
                              "sync_every_seconds": settings.inventory_sync_seconds}
    if good is None or last is None:
        status.update(state="never" if last is None else "failing", snapshot_id=None, last_good_sync_at=None)
    else:
        status.update(state="ok" if last.id == good.id else "stale", snapshot_id=good.id,
                      last_good_sync_at=_iso(good.finished_at), hosts=good.hosts, groups=good.groups,
                      disabled_hosts=good.disabled_hosts, problems=list(good.problems or []))
    if last is not None and not last.ok:
        status.update(last_error=last.error, last_attempt_at=_iso(last.finished_at))
    return status


def status_line(status: dict[str, Any]) -> str:
    """One line a person reads: where the inventory comes from and whether it is current."""
    if status.get("source") != "awx":
        return "inventory: file"
    state = status.get("state")
    if state == "never":
        return "inventory: not synced from AWX yet"
    if state == "failing":
        return f"inventory: AWX sync failing ({status.get('last_error')}); nothing synced yet"
    text = f"inventory: {status.get('hosts')} hosts from AWX, synced {status.get('last_good_sync_at')}"
    if state == "stale":
        text += f"; the last sync failed ({status.get('last_error')}), serving the last good snapshot"
    problems = status.get("problems") or []
    if problems:
        text += f"; {len(problems)} problem{'s' if len(problems) != 1 else ''}: {problems[0]}"
    return text


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def check_awx_catalog() -> Catalog | None:
    """Start-up with INVENTORY_SOURCE=awx: the patch-group and policy files must load (else exit with the reason);
    the inventory comes from the newest snapshot, whose template problems are logged."""
    from core.settings import get_settings

    settings = get_settings()
    if not _inventory_names(settings):
        raise SystemExit("patchpilot cannot start: INVENTORY_SOURCE=awx needs AWX_INVENTORY (inventory names or ids)")
    try:
        _files(settings)
    except PolicyError as exc:
        raise SystemExit(f"patchpilot cannot start: {exc} [POLICY_FILE={settings.policy_file}]") from None
    except (OSError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise SystemExit(f"patchpilot cannot start: the patch-group file is unusable: {exc} "
                         f"[PATCH_GROUPS_FILE={settings.patch_groups_file}]") from None
    try:
        status = sync_status()
    except Exception as exc:
        log.warning("inventory from AWX: cannot read the sync status yet (%s)", exc.__class__.__name__)
        return None
    log.info("%s", status_line(status))
    for problem in status.get("problems") or []:
        log.warning("inventory sync: %s", problem)
    try:
        return current_catalog()
    except InventoryNotSynced:
        return None
