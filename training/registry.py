"""Model versions in the database: the defaults, lookups by name or id, registration of what a
trainer produced, and the active policy."""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ModelKind, ModelStatus, ModelVersion, RegistryEvent
from training.defaults import DEFAULTS
from training.errors import UsageError

JUDGE_KINDS = (ModelKind.REWARD, ModelKind.RANKER)


def register_defaults(db: Session, models_dir: Path) -> list[ModelVersion]:
    """Register the default policy and encoder once; the first policy becomes the active one."""
    added = []
    for model in DEFAULTS:
        if db.scalar(select(ModelVersion).where(ModelVersion.name == model.name)) is None:
            status = (ModelStatus.ACTIVE if model.kind == ModelKind.POLICY and active_policy(db) is None
                      else ModelStatus.REGISTERED)
            version = ModelVersion(kind=model.kind, name=model.name, base_model=str(model.path(models_dir)),
                                   status=status, round=0,
                                   config={"package": f"{model.package}=={model.version}"})
            db.add(version)
            db.flush()
            added.append(version)
    return added


def active_policy(db: Session) -> ModelVersion | None:
    return db.scalar(select(ModelVersion).where(ModelVersion.kind == ModelKind.POLICY,
                                                ModelVersion.status == ModelStatus.ACTIVE)
                     .order_by(ModelVersion.id.desc()))


def find_version(db: Session, ref: str) -> ModelVersion | None:
    """A model version by id or by name."""
    if ref.isdigit():
        return db.get(ModelVersion, int(ref))
    return db.scalar(select(ModelVersion).where(ModelVersion.name == ref))


def resolve_version(db: Session, ref: str | None, kinds: Collection[ModelKind] = ()) -> ModelVersion:
    """The version `ref` names (id or name), or the active policy when `ref` is None; a clear
    `UsageError` when there is none, or when it is not of one of `kinds`."""
    if ref is None:
        version = active_policy(db)
        if version is None:
            raise UsageError("no active policy; run `calibra models fetch`")
        return version
    version = find_version(db, ref)
    if version is None:
        raise UsageError(f"no model version {ref!r}; see `calibra models list`")
    if kinds and version.kind not in kinds:
        wanted = " or ".join(k.value for k in kinds)
        raise UsageError(f"{ref!r} is a {version.kind.value} version, not a {wanted} version; "
                         "see `calibra models list`")
    return version


def check_name_free(db: Session, name: str) -> None:
    if db.scalar(select(ModelVersion.id).where(ModelVersion.name == name)) is not None:
        raise UsageError(f"a model version named {name!r} exists already; pick another name")


def register_version(db: Session, kind: ModelKind, name: str, base_model: str, artifact: str | None, *,
                     parent: ModelVersion | None, round_: int | None, config: dict[str, Any],
                     metrics: dict[str, Any], snapshot: dict[str, Any]) -> ModelVersion:
    """What a trainer saved, as a model version with its lineage (parent, round), the data it
    learned from, its settings and its metrics."""
    check_name_free(db, name)
    version = ModelVersion(kind=kind, name=name, base_model=base_model, artifact_path=artifact,
                           parent_id=parent.id if parent else None, round=round_, data_snapshot=snapshot,
                           config=config, metrics=metrics, status=ModelStatus.REGISTERED)
    db.add(version)
    db.flush()
    return version


def activate(db: Session, version: ModelVersion) -> None:
    """Make `version` the active one of its kind (the policy new samples come from, the judge
    rounds use); the previous active one is retired."""
    for other in db.scalars(select(ModelVersion).where(ModelVersion.kind == version.kind,
                                                       ModelVersion.status == ModelStatus.ACTIVE)):
        other.status = ModelStatus.RETIRED
    version.status = ModelStatus.ACTIVE
    db.flush()


def list_versions(db: Session) -> list[dict[str, Any]]:
    """Every registered version, oldest first, as `calibra models list --json` prints them."""
    return [{"id": v.id, "kind": v.kind.value, "name": v.name, "status": v.status.value, "round": v.round,
             "base_model": v.base_model, "artifact_path": v.artifact_path, "parent_id": v.parent_id,
             "snapshot": v.data_snapshot, "config": v.config, "metrics": v.metrics}
            for v in db.scalars(select(ModelVersion).order_by(ModelVersion.id))]


def active_judge(db: Session, kind: ModelKind) -> ModelVersion | None:
    """The reward (or ranking) model the loop uses now: the newest active version of the kind."""
    return db.scalar(select(ModelVersion).where(ModelVersion.kind == kind, ModelVersion.status == ModelStatus.ACTIVE)
                     .order_by(ModelVersion.id.desc()))


def promote(db: Session, version: ModelVersion, actor: str, reason: str | None = None) -> RegistryEvent:
    """Make a policy version the active one, recorded with who did it and why."""
    if version.kind != ModelKind.POLICY:
        raise UsageError(f"{version.name!r} is a {version.kind.value} version; only policies are promoted")
    previous = active_policy(db)
    activate(db, version)
    event = RegistryEvent(action="promote", model_version_id=version.id,
                          previous_id=previous.id if previous else None, actor=actor, reason=reason)
    db.add(event)
    db.flush()
    return event


def rollback(db: Session, actor: str, reason: str | None = None) -> RegistryEvent:
    """Go back to the policy that was active before the current one (as the last promotion
    recorded it, or else the current one's parent), recorded with who did it."""
    current = active_policy(db)
    if current is None:
        raise UsageError("no active policy to roll back")
    last = db.scalar(select(RegistryEvent).where(RegistryEvent.model_version_id == current.id,
                                                 RegistryEvent.action == "promote")
                     .order_by(RegistryEvent.id.desc()))
    target_id = last.previous_id if last is not None and last.previous_id else current.parent_id
    target = db.get(ModelVersion, target_id) if target_id else None
    if target is None:
        raise UsageError(f"{current.name!r} has no earlier policy to roll back to")
    activate(db, target)
    event = RegistryEvent(action="rollback", model_version_id=target.id, previous_id=current.id, actor=actor,
                          reason=reason)
    db.add(event)
    db.flush()
    return event


def registry_events(db: Session, limit: int = 50) -> list[dict[str, Any]]:
    names = dict(db.execute(select(ModelVersion.id, ModelVersion.name)).all())
    return [{"action": e.action, "model_version": names.get(e.model_version_id),
             "previous": names.get(e.previous_id) if e.previous_id else None, "actor": e.actor, "reason": e.reason,
             "at": e.created_at.isoformat(timespec="seconds")}
            for e in db.scalars(select(RegistryEvent).order_by(RegistryEvent.id.desc()).limit(limit))]
