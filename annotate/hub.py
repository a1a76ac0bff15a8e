"""Fetch a dataset split from the Hugging Face Hub as files the importers read."""
from __future__ import annotations

from pathlib import Path

from annotate.errors import InvalidInput
from annotate.readers import FORMATS


def fetch_split(dataset_id: str, split: str, cache_dir: Path) -> list[Path]:
    """Download the data files of one split (Parquet, JSONL or CSV) of a Hub dataset."""
    import httpx
    from huggingface_hub import HfApi, constants, hf_hub_download

    where = f"dataset {dataset_id!r} (split {split!r})"
    try:
        if constants.HF_HUB_OFFLINE:
            raise ConnectionError("HF_HUB_OFFLINE is set")
        # One quick probe first: the Hub client retries a dead network for half a minute.
        httpx.head(constants.ENDPOINT, timeout=10)
        files = HfApi().list_repo_files(dataset_id, repo_type="dataset")
        chosen = [f for f in files if Path(f).suffix in FORMATS and _in_split(f, split)]
        if not chosen:
            raise InvalidInput(f"{where} has no Parquet, JSONL or CSV files for that split; "
                               f"files: {', '.join(files[:10])}")
        return [Path(hf_hub_download(dataset_id, f, repo_type="dataset", cache_dir=cache_dir))
                for f in sorted(chosen)]
    except InvalidInput:
        raise
    except Exception as exc:  # connection refused, offline mode, unknown repo, gated repo, ...
        raise InvalidInput(
            f"cannot fetch {where} from the Hugging Face Hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). Download the files where "
            "the Hub is reachable and import them with `calibra import documents FILE`.") from None


def _in_split(path: str, split: str) -> bool:
    parts = Path(path).with_suffix("").parts
    name = parts[-1]
    return split in parts[:-1] or name == split or name.startswith(f"{split}-") or name.startswith(f"{split}.")
