"""Service settings: one pydantic-settings object, read from ``AUTOPRUNE_*`` environment variables.

Every variable read here is documented in the README ("Configuration"). Paths left unset derive
from ``data_dir`` so that one variable moves everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from search_spaces.paths import inside


class Settings(BaseSettings):
    """Controller settings (environment prefix ``AUTOPRUNE_``)."""

    model_config = SettingsConfigDict(env_prefix="AUTOPRUNE_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".cache" / "autoprune")
    database_url: str | None = None  # default: sqlite file under data_dir
    artifacts_dir: Path | None = None  # default: data_dir/artifacts
    uploads_dir: Path | None = None  # default: data_dir/uploads
    cache_dir: Path | None = None  # default: data_dir (trained references, latency cache)
    # Directories user-given dataset (and weights) paths must lie in; comma-separated in the env.
    data_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    api_token: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_concurrent_jobs: int = Field(default=1, ge=1, le=64)
    # Job leases (replicas on one database): a running job's lease is renewed every
    # lease_seconds / 3; a lease not renewed for lease_seconds is stale and another controller
    # takes the job over. Every controller looks for claimable jobs every job_poll_seconds.
    lease_seconds: float = Field(default=30.0, ge=1.0, le=3600.0)
    job_poll_seconds: float = Field(default=1.0, ge=0.05, le=60.0)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    allow_pickle: bool = False
    # Unpackaged plugin code job specs may name: 'module:function' targets or module prefixes
    # ('mypkg.models.'); comma-separated in the env. Installed entry points need no entry here.
    plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ray_address: str | None = Field(
        default=None, validation_alias=AliasChoices("AUTOPRUNE_RAY_ADDRESS", "RAY_ADDRESS", "ray_address")
    )

    @field_validator("data_roots", "plugins", mode="before")
    @classmethod
    def _split_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [p for p in (s.strip() for s in v.split(",")) if p]
        return v

    @field_validator("plugins")
    @classmethod
    def _plugin_entries(cls, v: list[str]) -> list[str]:
        from search_spaces.registry import Allowlist

        Allowlist.parse(v)  # a malformed entry stops start-up, naming it
        return v

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        self.artifacts_dir = (self.artifacts_dir or self.data_dir / "artifacts").expanduser().resolve()
        self.uploads_dir = (self.uploads_dir or self.data_dir / "uploads").expanduser().resolve()
        # The reference/latency cache defaults to data_dir itself: the same place `make test` uses.
        self.cache_dir = (self.cache_dir or self.data_dir).expanduser().resolve()
        self.data_roots = [p.expanduser().resolve() for p in self.data_roots]
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'autoprune.db'}"
        if self.api_token == "":
            self.api_token = None
        return self

    @property
    def heartbeat_seconds(self) -> float:
        """How often a controller renews its leases: three renewals fit in one lease."""
        return self.lease_seconds / 3

    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url

    def ensure_dirs(self) -> None:
        """Creates the directories the service writes to."""
        for d in (self.data_dir, self.artifacts_dir, self.uploads_dir, self.cache_dir):
            assert d is not None
            d.mkdir(parents=True, exist_ok=True)

    def is_confined(self, path: str | Path) -> bool:
        """True when ``path`` resolves inside one of ``data_roots`` (symlinks followed)."""
        return inside(path, self.data_roots) is not None
