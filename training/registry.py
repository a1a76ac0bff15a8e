"""Model versions in the database: the defaults, lookups by name or id, the active policy."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ModelKind, ModelStatus, ModelVersion
from training.defaults import DEFAULTS


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
