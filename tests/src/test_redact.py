"""Tokens and passwords never reach what a run writes."""

from __future__ import annotations

from src.redact import redact
from tests.conftest import TINY, run_module

TOKEN = "hf_TestSecretToken42"
PASSWORD = "pa55-w0rd-xyz"


def test_redact_masks_urls_keys_and_env_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    text = f"storage: postgresql://alice:{PASSWORD}@db/optuna\napi_key=sk-123 max_new_tokens: 48 {TOKEN}"
    clean = redact(text)
    assert PASSWORD not in clean and "sk-123" not in clean and TOKEN not in clean
    assert "postgresql://alice:***@db/optuna" in clean and "max_new_tokens: 48" in clean


def test_run_outputs_hold_no_secret(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        *TINY,
        "optim.max_steps=2",
        "eval.steps=2",
        "data.task_metric=none",
        f"hydra.run.dir={run_dir}",
        f"+hydra.job.env_set.DB_PASSWORD={PASSWORD}",  # lands in Hydra's saved hydra.yaml unless redacted
    ]
    env = {
        "HF_TOKEN": TOKEN,
        "WANDB_API_KEY": "wandb-" + PASSWORD,
        "PGPASSWORD": "pg-" + PASSWORD,
        "MYSQL_PWD": "my-" + PASSWORD,
        "GITHUB_PAT": "ghp-" + PASSWORD,
    }
    result = run_module("src.train", *overrides, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert TOKEN not in result.stdout + result.stderr and PASSWORD not in result.stdout + result.stderr
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "hydra.yaml" for p in files) and any("tfevents" in p.name for p in files)
    for path in files:
        data = path.read_bytes()
        assert TOKEN.encode() not in data and PASSWORD.encode() not in data, path
    assert {oct(p.stat().st_mode & 0o777) for p in (run_dir / ".hydra").iterdir()} == {"0o600"}


def test_a_refused_run_writes_no_secret_anywhere(tmp_path):
    """Refused before any check could mask them (a config error): nothing is written at all."""
    run_dir = tmp_path / "run"
    overrides = [*TINY, "optim.learning_rate=-1", f"hydra.run.dir={run_dir}"]
    overrides.append(f"+hydra.job.env_set.DB_PASSWORD={PASSWORD}")
    result = run_module("src.train", *overrides, env={"DATABASE_URL": f"postgresql://u:{PASSWORD}@h/db"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert not run_dir.exists() or not any(p.is_file() for p in run_dir.rglob("*"))


def test_whole_values_are_masked_including_spaces_and_database_variables(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "pg secret value")
    text = 'password: "two words" DATABASE_URL=postgresql://u:p@h/db note: pg secret value'
    clean = redact(text)
    assert "two words" not in clean and "postgresql://u:p" not in clean and "pg secret value" not in clean
    assert 'password: "***"' in clean
