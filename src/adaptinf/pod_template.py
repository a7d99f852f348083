"""The stage pods' template a run may set per stage (`resources.<stage>`: env, volumes, mounts,
labels, …; docs/install.md "Pod template per stage"), validated so that nothing the operator sets
itself can be overridden. The models only; operator/jobs.py renders them."""
from __future__ import annotations

import posixpath
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from adaptinf.spec_base import SpecModel

# Kubernetes' name formats (k8s.io/apimachinery validation), also the CRD's patterns.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_QUALIFIED_NAME = re.compile(r"^(?:(?P<prefix>[^/]+)/)?(?P<name>[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
# What the operator sets on every stage pod itself (operator/jobs.py; tests/k8s/test_pod_template.py
# keeps the lists in step with it): a run may not set these.
OPERATOR_LABEL_PREFIXES = ("adaptinf.dev/", "batch.kubernetes.io/")   # the Job controller's own labels too
OPERATOR_LABELS = ("app.kubernetes.io/managed-by", "app.kubernetes.io/name", "app.kubernetes.io/component",
                   "kueue.x-k8s.io/queue-name", "controller-uid", "job-name")
OPERATOR_ANNOTATION_PREFIXES = ("adaptinf.dev/",)
OPERATOR_ENV_PREFIXES = ("ADAPTINF_",)
OPERATOR_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION",
                "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN", "JOB_COMPLETION_INDEX")
# Set by the operator only when the run does not: HF_TOKEN from model.tokenSecret (a run that also
# sets it in env is refused), HF_HOME at the chart's model cache (a run's own HF_HOME wins).
OPERATOR_ENV_UNLESS_SET = ("HF_TOKEN", "HF_HOME")
# What a run's volume would be instead, for an operator-owned volume name.
INSTEAD = {"dshm": "its /dev/shm: set shmSize", "model-cache": "the chart's modelCache volume"}
# The memory-backed /dev/shm the operator mounts (shmSize, or a multi-GPU train).
SHM_VOLUME_NAME = "dshm"
SHM_PATH = "/dev/shm"
# The model cache PersistentVolumeClaim the chart's modelCache values give the stage pods.
MODEL_CACHE_VOLUME_NAME = "model-cache"
OPERATOR_VOLUMES = (SHM_VOLUME_NAME, MODEL_CACHE_VOLUME_NAME)
OPERATOR_MOUNT_PATHS = (SHM_PATH,)


def qualified_name_error(key: str) -> str | None:
    """Why `key` is no Kubernetes label/annotation key (`[prefix/]name`), or None."""
    m = _QUALIFIED_NAME.match(key)
    if not m or len(m["name"]) > 63:
        return "must be [prefix/]name, the name at most 63 characters of alphanumerics, '-', '_' or '.'"
    prefix = m["prefix"]
    if prefix is not None and (len(prefix) > 253 or not re.match(DNS_SUBDOMAIN, prefix)):
        return "its prefix must be a DNS subdomain (lowercase, digits, '-', '.')"
    return None


def _label_value(value: str) -> str:
    if len(value) > 63 or not re.match(LABEL_VALUE, value):
        raise ValueError(f"label value {value!r} must be at most 63 alphanumerics, '-', '_' or '.', "
                         "beginning and ending with an alphanumeric")
    return value


LabelValue = Annotated[str, AfterValidator(_label_value)]


def reserved(name: str, exact: tuple[str, ...], prefixes: tuple[str, ...]) -> bool:
    return name in exact or name.startswith(prefixes)


def _one_of(model: BaseModel, names: tuple[str, str], where: str) -> None:
    aliases = [to_camel(n) for n in names if getattr(model, n) is not None]
    if len(aliases) != 1:
        raise ValueError(f"{where} takes exactly one of {to_camel(names[0])} or {to_camel(names[1])}"
                         + (", got both" if aliases else ""))


class KeyRef(SpecModel):
    """One key of a Secret or ConfigMap in the run's namespace."""
    name: str = Field(..., min_length=1, max_length=253)
    key: str = Field(..., min_length=1, max_length=253)
    optional: bool | None = None


class EnvVarSource(SpecModel):
    secret_key_ref: KeyRef | None = None
    config_map_key_ref: KeyRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        _one_of(self, ("secret_key_ref", "config_map_key_ref"), "valueFrom")
        return self


class EnvVar(SpecModel):
    """An extra variable of the stage container: a literal `value` (stored with the run: nothing
    secret) or `valueFrom` a Secret's or ConfigMap's key."""
    name: str = Field(..., min_length=1, pattern=ENV_NAME)
    value: str | None = None
    value_from: EnvVarSource | None = None

    @field_validator("name")
    @classmethod
    def _not_the_operators(cls, v: str) -> str:
        if reserved(v, OPERATOR_ENV, OPERATOR_ENV_PREFIXES):
            raise ValueError(f"{v} is set by the operator (docs/contracts.md §1) and cannot be overridden")
        return v

    @model_validator(mode="after")
    def _value_or_ref(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: give value or valueFrom, not both")
        return self


class NameRef(SpecModel):
    """A whole Secret or ConfigMap in the run's namespace."""
    name: str = Field(..., min_length=1, max_length=253)
    optional: bool | None = None


class EnvFromSource(SpecModel):
    """Every key of a Secret or ConfigMap as a variable (the operator's own `env` wins over them)."""
    prefix: str | None = None
    secret_ref: NameRef | None = None
    config_map_ref: NameRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        _one_of(self, ("secret_ref", "config_map_ref"), "an envFrom entry")
        return self


class PodVolume(SpecModel):
    """A Kubernetes Volume: its `name` and exactly one volume source (persistentVolumeClaim,
    configMap, secret, emptyDir, csi, …), passed to the pod as it is."""
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = Field(..., min_length=1, max_length=63, pattern=DNS_LABEL)

    @field_validator("name")
    @classmethod
    def _not_the_operators(cls, v: str) -> str:
        if v in OPERATOR_VOLUMES:
            raise ValueError(f"volume name {v!r} is the operator's ({INSTEAD[v]})")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> PodVolume:
        sources = self.model_extra or {}
        if len(sources) != 1 or not isinstance(next(iter(sources.values())), dict):
            got = ", ".join(sources) or "none"
            raise ValueError(f"volume {self.name!r} needs exactly one volume source object "
                             f"(persistentVolumeClaim, configMap, secret, emptyDir, …), got {got}")
        return self


class VolumeMount(SpecModel):
    name: str = Field(..., min_length=1)
    mount_path: str = Field(..., min_length=1, pattern=r"^/")
    read_only: bool | None = None
    sub_path: str | None = None

    @field_validator("mount_path")
    @classmethod
    def _not_the_operators(cls, v: str) -> str:
        path = posixpath.normpath(v)
        for own in OPERATOR_MOUNT_PATHS:
            if path == own or path.startswith(own + "/") or own.startswith(path.rstrip("/") + "/"):
                raise ValueError(f"{v} collides with the operator's mount {own}"
                                 + (" (set shmSize for its size)" if own == SHM_PATH else ""))
        return v

    @field_validator("sub_path")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("/") or ".." in v.split("/")):
            raise ValueError(f"subPath {v!r} must be a relative path without '..'")
        return v
