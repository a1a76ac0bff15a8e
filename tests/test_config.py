from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, load_settings


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={})
    assert s.home == tmp_path / ".calibra"
    assert s.database_url == f"sqlite:///{tmp_path / '.calibra' / 'calibra.db'}"
    assert s.models_dir == tmp_path / ".calibra" / "models" and s.config_file is None


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "calibra.toml").write_text('home = "data"\nlease_minutes = 5\nreplication = 5\n')
    s = load_settings(environ={"CALIBRA_DATABASE_URL": "postgresql+psycopg://u@h/db", "CALIBRA_REPLICATION": "2"})
    assert s.home == tmp_path / "data" and s.lease_minutes == 5.0
    assert s.database_url == "postgresql+psycopg://u@h/db" and s.replication == 2


def test_unknown_or_bad_settings_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "calibra.toml").write_text("replicaton = 3\n")
    with pytest.raises(ConfigError, match="replicaton"):
        load_settings(environ={})
    (tmp_path / "calibra.toml").write_text("replication = 'three'\n")
    with pytest.raises(ConfigError, match="replication"):
        load_settings(environ={})


def test_the_config_file_in_the_given_home_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CALIBRA_HOME from the `environ` argument decides where calibra.toml is looked for, not
    the process environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALIBRA_HOME", raising=False)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "calibra.toml").write_text("replication = 7\n")
    s = load_settings(environ={"CALIBRA_HOME": str(tmp_path / "elsewhere")})
    assert s.replication == 7 and s.config_file == tmp_path / "elsewhere" / "calibra.toml"
    assert load_settings(environ={}).replication == 3


def test_loop_settings_are_checked() -> None:
    settings = load_settings(environ={"CALIBRA_NEXT_BATCH_SELECTION": " Uncertainty ",
                                      "CALIBRA_HACKING_ALARM_GAP": "0.2"})
    assert (settings.next_batch_selection, settings.hacking_alarm_gap) == ("uncertainty", 0.2)
    with pytest.raises(ConfigError, match="next_batch_selection: 'smart' is not a valid random or uncertainty"):
        load_settings(environ={"CALIBRA_NEXT_BATCH_SELECTION": "smart"})


def test_the_request_log_is_a_path_or_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ={}).request_log is None
    assert load_settings(environ={"CALIBRA_REQUEST_LOG": "logs/requests.tsv"}).request_log == \
        tmp_path / "logs" / "requests.tsv"
    assert load_settings(environ={"CALIBRA_REQUEST_LOG": " "}).request_log is None
