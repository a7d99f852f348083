"""The operator's settings: the environment of its Deployment (docs/contracts.md §2).

Parsed once at startup; a bad value stops the operator with a message naming the variable.
Two extras beyond the contract, both for tests and small clusters:
`ADAPTINF_RECONCILE_INTERVAL` (seconds between level-based reconciles of a run; Job and dataset
events wake it earlier) and `AWS_DEFAULT_REGION` (passed to stage Jobs when set).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping


class ConfigError(ValueError):
    """An operator environment variable is malformed; the message names it."""


@dataclass(frozen=True)
class OperatorConfig:
    namespace: str = ""
    stage_image: str = "ghcr.io/adaptinf/adaptinf-stage:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    store: str = ""
    s3_endpoint: str = ""
    s3_secret: str = ""
    mlflow_uri: str = ""
    mlflow_secret: str = ""
    gpu_resource: str = "nvidia.com/gpu"
    default_gpus: int = 1
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    service_account: str = ""
    backoff_limit: int = 2
    active_deadline: int = 86400
    pending_timeout: float = 1800.0
    ttl_after_finished: int | None = None
    reconcile_interval: float = 30.0
    # A new step starts only once no dataset of the run has arrived for this long (seconds), so
    # that datasets applied together are ordered by spec.order, whatever order the API saw them in.
    arrival_window: float = 5.0
    aws_region: str = ""
    # A PersistentVolumeClaim (in each stage namespace) mounted into every stage pod at
    # model_cache_path as the hub and s3:// model cache: a step's five pods download a base once.
    model_cache_claim: str = ""
    model_cache_path: str = "/cache/models"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env

        def text(name: str, default: str = "") -> str:
            return env.get(name, "").strip() or default

        def number(name: str, default: float, kind: type = int, minimum: float = 0) -> Any:
            raw = text(name)
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a{'n integer' if kind is int else ' number'}") from None
            if value < minimum:
                raise ConfigError(f"{name}={raw!r} must be >= {minimum}")
            return value

        def parsed(name: str, default: Any, want: type) -> Any:
            raw = text(name)
            if not raw:
                return default
            try:
                value = json.loads(raw)
            except ValueError as err:
                raise ConfigError(f"{name} is not valid JSON: {err}") from None
            if not isinstance(value, want):
                raise ConfigError(f"{name} must be a JSON {'object' if want is dict else 'list'}, got {raw!r}")
            return value

        selector = parsed("ADAPTINF_NODE_SELECTOR", {}, dict)
        if not all(isinstance(v, str) for v in selector.values()):
            raise ConfigError("ADAPTINF_NODE_SELECTOR values must be strings")
        ttl = text("ADAPTINF_TTL_AFTER_FINISHED")
        return cls(
            namespace=text("ADAPTINF_NAMESPACE"),
            stage_image=text("ADAPTINF_STAGE_IMAGE", cls.stage_image),
            image_pull_policy=text("ADAPTINF_IMAGE_PULL_POLICY", cls.image_pull_policy),
            store=text("ADAPTINF_STORE"),
            s3_endpoint=text("ADAPTINF_S3_ENDPOINT"),
            s3_secret=text("ADAPTINF_S3_SECRET"),
            mlflow_uri=text("ADAPTINF_MLFLOW_URI"),
            mlflow_secret=text("ADAPTINF_MLFLOW_SECRET"),
            gpu_resource=text("ADAPTINF_GPU_RESOURCE", cls.gpu_resource),
            default_gpus=number("ADAPTINF_DEFAULT_GPUS", cls.default_gpus),
            node_selector=selector,
            tolerations=parsed("ADAPTINF_TOLERATIONS", [], list),
            service_account=text("ADAPTINF_SERVICE_ACCOUNT"),
            backoff_limit=number("ADAPTINF_BACKOFF_LIMIT", cls.backoff_limit),
            active_deadline=number("ADAPTINF_ACTIVE_DEADLINE", cls.active_deadline, minimum=1),
            pending_timeout=number("ADAPTINF_PENDING_TIMEOUT", cls.pending_timeout, float),
            ttl_after_finished=number("ADAPTINF_TTL_AFTER_FINISHED", 0) if ttl else None,
            reconcile_interval=number("ADAPTINF_RECONCILE_INTERVAL", cls.reconcile_interval, float, minimum=0.1),
            arrival_window=number("ADAPTINF_ARRIVAL_WINDOW", cls.arrival_window, float),
            aws_region=text("AWS_DEFAULT_REGION"),
            model_cache_claim=text("ADAPTINF_MODEL_CACHE_CLAIM"),
            model_cache_path=_absolute("ADAPTINF_MODEL_CACHE_PATH", text("ADAPTINF_MODEL_CACHE_PATH", cls.model_cache_path)),
        )


def _absolute(name: str, path: str) -> str:
    if not path.startswith("/"):
        raise ConfigError(f"{name}={path!r} must be an absolute path")
    return path
