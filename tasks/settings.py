"""docroute settings, from DOCROUTE_* environment variables. No secrets here: those live in blocks."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from blocks.ledger import LedgerDatabase

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "deployments"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCROUTE_")

    home: Path = Field(default=Path.home() / ".docroute", description="Working folder (SQLite ledger, locks).")
    config_dir: Path = Field(
        default=PACKAGE_CONFIG_DIR, description="Folder with clients/*.yaml, templates/*.yaml and lookups/."
    )
    ledger_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the ledger without a password (e.g. a SQLite file, or PostgreSQL "
        "with trust or peer auth). Default: a SQLite file in `home`.",
    )
    ledger_block: str | None = Field(
        default=None,
        description="Name of a ledger-database block holding the URL with its password; wins over ledger_url.",
    )
    batch_size: int = Field(default=200, description="Documents per delivery task run.")
    work_pool: str = Field(default="docroute", description="Work pool (type docroute) that `docroute deploy` attaches deployments to.")
    warm: bool = Field(
        default=False,
        description="This process runs many flow runs (the docroute worker): keep ledger connections, and block "
        "documents for block_cache_seconds, between runs.",
    )
    block_cache_seconds: float = Field(default=60.0, ge=0, description="How long a warm process reuses a loaded block.")
    notify_email: str = Field(
        default="", description="Comma-separated addresses e-mailed when any sync run fails (besides each integration's notify.email)."
    )
    notify_smtp: str | None = Field(
        default=None, description="SMTP connection block for failure e-mails, e.g. smtp-connection/ops (when notify.smtp is not set)."
    )

    def notify_email_list(self) -> list[str]:
        return [a.strip() for a in self.notify_email.split(",") if a.strip()]

    def resolved_ledger_url(self) -> str:
        if self.ledger_block:
            return LedgerDatabase.load(self.ledger_block).url.get_secret_value()
        if self.ledger_url:
            return self.ledger_url
        self.home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.home / 'ledger.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
