"""Training curves through Accelerate's trackers (`--report-to tensorboard`), read back as
TensorBoard reads them, and the one line each long command ends with."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from tests.test_judges import _synthetic
from tests.test_slic import _records
from training.judges.config import JudgeConfig
from training.judges.pairs import split_by_document
from training.judges.trainer import train_judge
from training.loading import load_tokenizer
from training.slic.config import SlicConfig
from training.slic.data import slic_examples
from training.slic.trainer import train_slic

runner = CliRunner()


def curves(logs: Path) -> dict[str, dict[int, float]]:
    """Every scalar curve of a run's log folder, tag -> {step: value}, read by TensorBoard's own reader."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        pytest.fail("tensorboard is not installed: pip install -e '.[test]'")
    events = EventAccumulator(str(logs))
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_a_judge_logs_its_loss_learning_rate_and_held_out_accuracy(tiny_encoder: Path, tmp_path: Path) -> None:
    train, test = split_by_document(_synthetic(64), 0.25, seed=0)
    cfg = JudgeConfig(backbone=str(tiny_encoder), max_length=48, learning_rate=2e-3, epochs=4, batch_texts=8,
                      warmup_ratio=0.25, report_to="tensorboard")
    result = train_judge("reward", train, test, cfg, out=tmp_path / "judges" / "rm", progress=False)
    logs = tmp_path / "judges" / "tensorboard" / "rm"
    saved = json.loads((tmp_path / "judges" / "rm" / "judge.json").read_text())
    assert saved["metrics"]["logs"] == str(logs)
    assert "report_to" not in saved["config"]  # where the curves go is no setting of the model
    logged = curves(logs)
    steps = result.metrics["optimizer_steps"]
    loss = logged["train/loss"]
    assert list(loss) == list(range(1, steps + 1))  # one value per optimizer step
    assert all(math.isfinite(v) for v in loss.values())
    values = list(loss.values())
    assert _mean(values[-steps // 4:]) < _mean(values[:steps // 4])  # it learned
    rate = list(logged["train/learning_rate"].values())
    assert max(rate) == pytest.approx(2e-3) and rate[0] < max(rate) and rate[-1] < max(rate)  # warm-up, decay
    assert logged["eval/accuracy"] == {steps: pytest.approx(result.metrics["test"]["accuracy"])}


def test_a_resumed_run_goes_on_with_its_curves_and_no_logging_writes_nothing(tiny_encoder: Path,
                                                                              tmp_path: Path) -> None:
    cfg = JudgeConfig(backbone=str(tiny_encoder), max_length=48, learning_rate=1e-3, epochs=2, batch_texts=8,
                      checkpoint_every=1, report_to="tensorboard")
    train_judge("reward", _synthetic(24), [], cfg, out=tmp_path / "rm", progress=False, stop_after=3)
    resumed = train_judge("reward", _synthetic(24), [], cfg, out=tmp_path / "rm", progress=False)
    assert list(curves(tmp_path / "tensorboard" / "rm")["train/loss"]) == list(range(1, resumed.metrics[
        "optimizer_steps"] + 1))
    quiet = JudgeConfig(**{**cfg.as_dict(), "epochs": 1})  # a saved config holds no report_to: none
    plain = train_judge("reward", _synthetic(24), [], quiet, out=tmp_path / "plain" / "rm", progress=False)
    assert "logs" not in plain.metrics and [p.name for p in (tmp_path / "plain").iterdir()] == ["rm"]


def test_slic_logs_its_loss_and_the_two_terms_of_it(tiny_lm: Path, tmp_path: Path) -> None:
    examples = slic_examples(_records() * 4, load_tokenizer(tiny_lm), "chat", "reference", 512)
    cfg = SlicConfig(lora_r=4, batch_size=2, learning_rate=1e-3, epochs=3, report_to="tensorboard")
    result = train_slic(tiny_lm, examples, cfg, out=tmp_path / "round" / "adapter", device="cpu", progress=False)
    logs = tmp_path / "round" / "tensorboard" / "adapter"
    assert json.loads((tmp_path / "round" / "adapter" / "slic.json").read_text())["metrics"]["logs"] == str(logs)
    logged = curves(logs)
    loss, calibration, regularisation = (logged[f"train/{k}"] for k in ("loss", "calibration", "regularisation"))
    steps = result.metrics["optimizer_steps"]
    assert list(loss) == list(range(1, steps + 1)) and all(math.isfinite(v) for v in loss.values())
    # the ranking hinge and λ·-log P(y_ref|x) add up to the loss at every step
    assert all(calibration[s] + regularisation[s] == pytest.approx(loss[s], rel=1e-4) for s in loss)
    values = list(loss.values())
    assert _mean(values[-steps // 3:]) < _mean(values[:steps // 3])


def _pairs_file(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                            for p in _synthetic(n)))
    return path


def test_train_ends_with_the_version_its_accuracy_and_where_the_logs_are(env: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          tiny_encoder: Path) -> None:
    monkeypatch.setenv("CALIBRA_MODELS_DIR", str(env / "models"))
    pairs = _pairs_file(env / "pairs.jsonl", 40)
    common = ["train", "reward", "--data", str(pairs), "--backbone", str(tiny_encoder), "--max-length", "48",
              "--epochs", "1"]
    done = runner.invoke(cli, [*common, "--name", "rm", "--report-to", "tensorboard"])
    assert done.exit_code == 0, done.output
    judges = env / "models" / "judges"
    last = done.output.strip().splitlines()[-1]
    assert last.startswith("registered rm (held-out accuracy ") and last.endswith(
        f"pairs) at {judges / 'rm'}; logs: tensorboard --logdir {judges / 'tensorboard' / 'rm'}")
    assert curves(judges / "tensorboard" / "rm")["train/loss"]
    # with --json the JSON is all there is on stdout; the line goes to stderr
    quiet = runner.invoke(cli, [*common, "--name", "rm2", "--json"])
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.stdout)["model_version"] == "rm2" and "logs" not in json.loads(quiet.stdout)
    assert quiet.stderr.strip().splitlines()[-1] == (
        f"registered rm2 (held-out accuracy {json.loads(quiet.stdout)['accuracy']:.2f} on "
        f"{json.loads(quiet.stdout)['test_pairs']} pairs) at {judges / 'rm2'}")
    measured = runner.invoke(cli, ["eval", "reward", "--model", "rm", "--data", str(pairs), "--json"])
    assert measured.exit_code == 0, measured.output
    accuracy = json.loads(measured.stdout)["accuracy"]
    assert measured.stderr.strip().splitlines()[-1] == f"rm: accuracy {accuracy:.3f} on 40 pairs of {pairs}"


def test_report_to_tensorboard_without_the_package_stops_at_once(env: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  tiny_encoder: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # how Python itself marks a package as not importable
    done = runner.invoke(cli, ["train", "reward", "--data", str(_pairs_file(env / "pairs.jsonl", 8)), "--backbone",
                               str(tiny_encoder), "--name", "rm", "--report-to", "tensorboard"])
    assert done.exit_code == 2
    assert done.output.strip().splitlines() == [
        "error: --report-to tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"]
    bad = runner.invoke(cli, ["train", "reward", "--report-to", "wandb"])
    assert bad.exit_code == 2 and "report_to must be one of none, tensorboard" in bad.output


def test_sft_and_tasks_end_with_what_they_made_and_where(loop_ready, env: Path) -> None:  # type: ignore[no-untyped-def]
    done = runner.invoke(cli, ["sft", "--docs", "4", "--epochs", "1", "--lora-r", "4", "--name", "sft-t",
                               "--report-to", "tensorboard"])
    assert done.exit_code == 0, done.output
    rounds = env / "home" / "rounds" / "sft"
    last = done.output.strip().splitlines()[-1]
    assert last.startswith("registered sft-t (4 examples, final loss ") and last.endswith(
        f") at {rounds / 'adapter'}; logs: tensorboard --logdir {rounds / 'tensorboard' / 'adapter'}")
    assert set(curves(rounds / "tensorboard" / "adapter")) >= {"train/loss", "train/learning_rate", "train/logp_ref"}
    made = runner.invoke(cli, ["tasks", "create", "--json"])
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)["tasks_created"]
    assert made.stderr.strip().splitlines()[-1].startswith(
        f"{created} comparison tasks of {json.loads(made.stdout)['candidates_in_tasks']} candidates ready for "
        "annotators in ")
