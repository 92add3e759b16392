"""Settings base: every deployable has one frozen pydantic-settings class with the RTML_ prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    """Where local state lives (data, registry, logs) when RTML_HOME is not set."""
    return Path.cwd() / ".rtml"


class RtmlSettings(BaseSettings):
    """Base class: frozen, ``RTML_``-prefixed, unknown variables ignored.

    Subclasses add their own documented fields; CLI flags override through
    ``Settings(**overrides)``, never the other way round.
    """

    model_config = SettingsConfigDict(env_prefix="RTML_", frozen=True, extra="ignore")

    home: Path = Field(default_factory=default_home, description="Directory for local state: data, registry, logs.")


class KafkaSettings(RtmlSettings):
    """Connection to a Kafka cluster; shared by every stage that produces or consumes."""

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated.")
    kafka_security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: str | None = Field(None, description="SASL mechanism, e.g. SCRAM-SHA-512, when SASL is used.")
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (kept out of logs and reprs).")
    topic_prefix: str = Field("", description="Prefix of every topic rtml reads or writes (one cluster, several environments).")
    kafka_fast_records: bool = Field(
        True, description="Consumers decode fetched record batches with rtml's inline loop (rtml_common.kafka_records: "
                          "the same records, ~6 us less CPU each); off, or with an unchecked kafka-python version, "
                          "kafka-python's own loop.")

    def topic(self, name: str) -> str:
        """The cluster topic of a declared topic name."""
        return self.topic_prefix + name

    def kafka_client_config(self) -> dict:
        """kafka-python keyword arguments for this cluster."""
        cfg: dict = {"bootstrap_servers": self.kafka_bootstrap.split(","), "security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            cfg["sasl_mechanism"] = self.kafka_sasl_mechanism
            cfg["sasl_plain_username"] = self.kafka_sasl_username
            cfg["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
        return cfg

