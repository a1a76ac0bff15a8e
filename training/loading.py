"""One loader for causal LMs and encoder backbones: hub id, local folder or GGUF file.

A GGUF checkpoint is de-quantised by transformers on every load (half a minute for the
135M default on a CPU), so the first load saves the result as an ordinary folder beside the
file and later loads read that folder in under a second.
"""
from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.errors import ModelLoadError

if TYPE_CHECKING:
    # What transformers gives `AutoModelForCausalLM.from_pretrained` for type checking: a
    # PreTrainedModel that can `generate` (transformers 5's PreTrainedModel alone cannot).
    from transformers.models.auto.modeling_auto import _BaseModelWithGenerate as CausalLM
else:
    CausalLM = PreTrainedModel


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: `location` is a folder or hub id; `gguf_file` names a file in it."""

    location: str
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.location).is_dir()


def resolve(spec: str | Path) -> ModelSource:
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{path}: a model file must be a .gguf checkpoint; "
                                 "pass the folder for other formats")
        return ModelSource(str(path.parent.absolute()), path.name)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").exists() and len(ggufs) == 1:
            return ModelSource(str(path.absolute()), ggufs[0].name)
        return ModelSource(str(path.absolute()))
    if str(spec).lower().endswith(".gguf") or str(spec).startswith(("/", ".", "~")):
        raise ModelLoadError(f"{spec}: no such file or folder")
    return ModelSource(str(spec))  # a hub id


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _dtype_for(device: torch.device, dtype: str | torch.dtype | None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def gguf_cache_dir(source: ModelSource) -> Path:
    assert source.gguf_file is not None
    return Path(source.location) / f"{Path(source.gguf_file).stem}.hf"


def _materialise_gguf(source: ModelSource) -> ModelSource:
    """De-quantise a GGUF file once into an ordinary folder (written atomically) and use it."""
    target = gguf_cache_dir(source)
    if (target / "config.json").exists():
        return ModelSource(str(target))
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file)
    # The weights are de-quantised floats now; drop the marker that forbids saving them.
    del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types Module.__setattr__ for tensors and modules only
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ModelSource(str(target))


def _local_source(spec: str | Path) -> ModelSource:
    source = resolve(spec)
    return _materialise_gguf(source) if source.gguf_file else source


def _wrap_errors(spec: str | Path, exc: Exception) -> ModelLoadError:
    hint = ("" if resolve(spec).is_local else
            " It is not a local folder or GGUF file, so it was looked up as a hub id;"
            " on a machine without the hub, pass a local folder or run `calibra models fetch`.")
    return ModelLoadError(f"cannot load model {spec!s}: {type(exc).__name__}: {exc}.{hint}")


def cache_kwarg(model: torch.nn.Module) -> str:
    """The argument that takes a KV cache: transformers renamed `past_key_values` to `cache` within
    5.x, and a model given the other name ignores it silently (its keyword arguments absorb it)."""
    get_base_model = getattr(model, "get_base_model", None)  # a peft wrapper's
    base = get_base_model() if get_base_model is not None else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def output_cache(output: Mapping[str, Any]) -> Any:
    """The KV cache a forward pass returned, under the name of the installed version."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def load_tokenizer(spec: str | Path, *, padding_side: str = "left") -> PreTrainedTokenizerBase:
    source = _local_source(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=source.is_local)
    except (OSError, ValueError) as exc:
        raise _wrap_errors(spec, exc) from exc
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(spec: str | Path, *, device: str = "auto", dtype: str | torch.dtype | None = None,
                   adapter: str | Path | None = None) -> CausalLM:
    """A causal LM in eval mode on `device`, with a LoRA adapter applied when given."""
    dev = pick_device(device)
    source = _local_source(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.location, dtype=_dtype_for(dev, dtype), local_files_only=source.is_local)
    except (OSError, ValueError) as exc:
        raise _wrap_errors(spec, exc) from exc
    if adapter is not None:
        from peft import PeftModel

        # the wrapper forwards every attribute it lacks to the model it wraps: callers use it as one
        model = cast("CausalLM", PeftModel.from_pretrained(model, str(adapter)))
    # transformers decorates `to` with functools.wraps(Module.to), which mypy reads as unbound
    return model.to(dev).eval()  # type: ignore[arg-type]


def load_sequence_classifier(spec: str | Path, *, num_labels: int = 1, device: str = "auto",
                             dtype: str | torch.dtype | None = None) -> PreTrainedModel:
    """An encoder (or decoder) backbone with a scalar or n-way head on top."""
    dev = pick_device(device)
    source = _local_source(spec)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source.location, num_labels=num_labels, dtype=_dtype_for(dev, dtype),
            local_files_only=source.is_local)
    except (OSError, ValueError) as exc:
        raise _wrap_errors(spec, exc) from exc
    return model.to(dev)
