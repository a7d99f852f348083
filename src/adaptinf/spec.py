"""The two resources users write, as validated Python objects.

One validation point for both backends: the local runner reads the YAML files users would
`kubectl apply`, the operator reads the same objects from the API server, and both go through
`load_resource` / `LifelongRunSpec.model_validate`. Field names are the CRD's camelCase; the
CRD schemas in `crds/` are generated from these models (tools/gen-crds.py, adaptinf.crd_schema).
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any, Literal, overload

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from adaptinf import manifest, strategy_options
from adaptinf.pod_template import (DNS_SUBDOMAIN, OPERATOR_ANNOTATION_PREFIXES, OPERATOR_LABEL_PREFIXES,
                                   OPERATOR_LABELS, OPERATOR_VOLUMES, INSTEAD, EnvFromSource, EnvVar, LabelValue,
                                   PodVolume, VolumeMount, qualified_name_error, reserved)
from adaptinf.spec_base import SpecError, SpecModel

API_GROUP = "adaptinf.dev"
API_VERSION = "v1alpha1"
FULL_API_VERSION = f"{API_GROUP}/{API_VERSION}"

DEFAULT_SCORERS = ("perplexity", "image-grounding", "el2n", "entropy")
# The names the registries in adaptinf.selection / adaptinf.scorers provide, sorted, read from
# their modules' source (adaptinf.manifest): the operator rejects an unknown one without importing
# them (they need torch and faiss).
STRATEGIES = manifest.strategy_names()
SCORERS = manifest.scorer_names()
DEFAULT_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class LoraSpec(SpecModel):
    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    # Regex over module names; the default hits every linear of the language model only (for a
    # language-only model, whose module names have no `language_model`, see `lora_target_modules`).
    target_modules: str = DEFAULT_LORA_TARGETS
    # Extra modules trained in full next to the adapter (LLaVA trains its projector too). The
    # default means the model family's projector (`merger` on Qwen-VL, see `modules_to_save`).
    modules_to_save: list[str] = Field(default_factory=lambda: ["multi_modal_projector"])

    @field_validator("target_modules")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        return v


def path_like(name: str) -> bool:
    """A model name that can only be a path or a store URI: a hub id is `name` or `org/name`."""
    return name.startswith(("/", ".", "~", "s3://")) or name.count("/") > 1 or "\\" in name


class ModelSpec(SpecModel):
    base: str = Field(..., min_length=1, description="local path, s3:// URI or hub id")
    # Step 0 instruction-tunes the base on the first dataset before any selection step:
    # `full` for a model trained from scratch (the tiny demo), `lora` or `none` for a real one.
    initial_tuning: Literal["none", "lora", "full"] = "none"
    initial_epochs: int = Field(10, ge=1, le=1000)
    initial_learning_rate: float = Field(1e-3, gt=0)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # A hub base's branch, tag or commit, passed to every from_pretrained: steps months apart use
    # the same weights. Hub ids only (a local folder or an s3:// base is what it is).
    revision: str | None = Field(None, min_length=1, max_length=255, pattern=r"^[^\s]+$")
    # A Secret whose key HF_TOKEN the operator gives the stage pods as HF_TOKEN (gated models);
    # the local runner reads HF_TOKEN from its own environment.
    token_secret: str | None = Field(None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    # Where hub downloads (and s3:// bases) are cached; default: ADAPTINF_MODEL_CACHE (the chart's
    # model cache volume), else Hugging Face's own cache (HF_HOME).
    cache_dir: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _revision_of_a_hub_id(self) -> ModelSpec:
        if self.revision and path_like(self.base):
            raise ValueError(f"model.revision: model.base {self.base!r} is a local path or store URI, not a "
                             f"hub id; a revision pins a hub model only (drop model.revision, or name the hub id)")
        return self


class ExtractSpec(SpecModel):
    # "middle", "first", "last", "all" or explicit decoder-layer indices.
    layers: list[int | Literal["middle", "first", "last", "all"]] = Field(
        default_factory=lambda: ["middle"])  # type: ignore[arg-type]  # list[str] of the Literal
    projection_dim: int = Field(8192, ge=8, le=1 << 16)
    batch_size: int = Field(16, ge=1, le=4096)
    max_length: int = Field(512, ge=16)
    seed: int = 0
    shards: int = Field(1, ge=1, le=1024)
    # backprop: exact per-sample gradients; zero-order: forward-only estimates (docs/options.md).
    gradient_source: Literal["backprop", "zero-order"] = "backprop"
    # A (smaller) model that computes every extract feature instead of the trained one.
    proxy_model: str | None = None
    # A fixed proxy gives a sample the same features at every step: reuse them from the store
    # (new samples only are computed). false: recompute the whole pool every step.
    reuse_features: bool = True
    # When the trained model's features are recomputed (docs/options.md §3, "Refresh policies"):
    # "every-step" (the paper) the whole pool at every step; "every-n-steps" a sample's features
    # once they are refreshEvery steps old (the new dataset always); "fraction" the new dataset
    # plus refreshFraction of the old pool, stratified by the previous step's clusters. The
    # others are reused from the step that last computed them (stages/refresh.py).
    refresh: Literal["every-step", "every-n-steps", "fraction"] = "every-step"
    refresh_every: int | None = Field(None, ge=2, le=1000)
    refresh_fraction: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _refresh_parameters(self) -> ExtractSpec:
        """Each policy's parameter is given with it and only with it; a policy is for the trained
        model, whose features change, and needs reuse on."""
        for policy, field, alias in (("every-n-steps", "refresh_every", "refreshEvery"),
                                     ("fraction", "refresh_fraction", "refreshFraction")):
            given = getattr(self, field) is not None
            if self.refresh == policy and not given:
                raise ValueError(f"extract.{alias}: required with extract.refresh: {policy}")
            if self.refresh != policy and given:
                raise ValueError(f"extract.{alias}: only read with extract.refresh: {policy} "
                                 f"(extract.refresh is {self.refresh})")
        if self.refresh != "every-step" and self.proxy_model:
            raise ValueError(f"extract.refresh: {self.refresh} is a policy for the trained model's features; "
                             "a proxy model's never change and are reused (extract.reuseFeatures) — "
                             "leave extract.refresh at every-step")
        if self.refresh != "every-step" and not self.reuse_features:
            raise ValueError(f"extract.reuseFeatures: false recomputes every feature at every step, which "
                             f"contradicts extract.refresh: {self.refresh}")
        return self


class ClusteringSpec(SpecModel):
    k_min: int = Field(5, ge=1)
    k_max: int = Field(50, ge=1)
    # Added to spec.seed (and the step) for k-means and the draws inside clusters: another value
    # re-draws the clustering alone, leaving the adapter's and training's seeds as they are.
    seed: int = Field(0, ge=0)
    niter: int = Field(25, ge=1, le=1000)
    # k-means restarts per k, best WSS kept (the paper: 1; one run's k followed its seed).
    nredo: int = Field(3, ge=1, le=100)
    # "gain": the smallest k whose next cluster cuts WSS by less than minGain (relative);
    # "elbow": the paper's elbow (kneedle on log WSS), which follows kMax on a curve without one.
    k_rule: Literal["gain", "elbow"] = "gain"
    min_gain: float = Field(0.05, gt=0, lt=1)
    # How the WSS curve is measured: "fast" on a subsample, only at the k the rule needs, then the
    # chosen k on every row; "full" (the reference) every k on every row; "auto" fast for pools
    # larger than the subsample (max(20000, 200·kMax) rows), full below (docs/options.md).
    sweep: Literal["auto", "fast", "full"] = "auto"
    # Re-runs of the k choice with other seeds, reported as k's stability (0: none).
    stability_seeds: int = Field(2, ge=0, le=10)
    # What is clustered: the paper's projected gradients, or hidden states (its Table-3 ablation).
    features: Literal["gradients", "hidden"] = "gradients"

    @model_validator(mode="after")
    def _range(self) -> ClusteringSpec:
        if self.k_max < self.k_min:
            raise ValueError(f"clustering.kMax ({self.k_max}) must be >= clustering.kMin ({self.k_min})")
        return self


class SelectionSpec(SpecModel):
    """Adapt-∞'s budget split and CCS where the paper is silent (docs/options.md)."""
    # CCS strata (and the scorer-choice histogram): "quota" uses min(ccsBins, the cluster's
    # quota), "fixed" always ccsBins (the paper: 50 bins, whatever the quota).
    ccs_bin_rule: Literal["quota", "fixed"] = "quota"
    ccs_bins: int = Field(50, ge=1, le=10000)
    # T over clusters: "uniform" (the paper) or "density" (by cluster size, its Table-3 ablation).
    budget_split: Literal["uniform", "density"] = "uniform"
    # A cluster whose mean cosine to its centroid is below diffuseRatio × the median cluster's is
    # diffuse; "size" gives it at least its size-proportional share, "none" the uniform one.
    diffuse: Literal["size", "none"] = "size"
    diffuse_ratio: float = Field(0.5, ge=0, le=1)
    # Samples whose mean answer-token NLL is below masteredLoss have near-zero gradients (their
    # directions are noise): "group" keeps them out of k-means as one group of their own.
    mastered: Literal["group", "none"] = "group"
    mastered_loss: float = Field(0.05, ge=0)
    # The mastered group's share of T: "cluster" one cluster's (uniform) share, as a rehearsal
    # sample; "size" at least its size share (spends most of T on what is already known when the
    # easy skill dominates the pool, as measured in docs/comparison.md).
    mastered_budget: Literal["cluster", "size"] = "cluster"
    # How the mastered group's quota is drawn: "pooled", one CCS draw over the whole group (the
    # skill with most mastered samples takes most of the rehearsal); "stratified", split evenly
    # over k-means clusters of the group's hidden states (what the samples are about: their
    # gradients are noise), so every mastered skill is rehearsed. Needs hidden states.
    mastered_rehearsal: Literal["pooled", "stratified"] = "pooled"


class PruneSpec(SpecModel):
    """Lite-Adapt-∞ pool pruning safeguards (docs/options.md)."""
    # At most this share of a cluster removed per step (the paper: 1.0, no cap).
    max_cluster_fraction: float = Field(0.5, gt=0, le=1)
    # "hidden-answer": only samples with the same answer can be redundant; "hidden": the paper.
    redundancy: Literal["hidden-answer", "hidden"] = "hidden-answer"
    # Hidden states for pruning from the model after this step's training (the paper) or the
    # ones extract computed before it.
    hidden_states: Literal["after-train", "extract"] = "after-train"


class RepairSpec(SpecModel):
    """The interference repair pass (docs/options.md §12): after the step's
    training, the pool samples whose answer loss rose most get a short second pass."""
    # Share of T held back from selection for the pass; 0 (the paper) turns it off.
    fraction: float = Field(0.0, ge=0, le=0.5)
    # A sample counts as interfered with when its mean answer NLL rose by more than this (nats).
    min_rise: float = Field(0.1, gt=0)
    # The pool samples checked (a seeded sample of those not selected): bounds the two forwards.
    max_checked: int = Field(2000, ge=1)
    # "after": one more epoch after the step's training (fresh schedule); "interleaved": checked
    # after the first epoch, the risen samples join the remaining epochs under the one schedule.
    placement: Literal["after", "interleaved"] = "after"


class EwcSpec(SpecModel):
    """An EWC penalty on top of any strategy that continues one adapter (docs/options.md §4):
    the `ewc` strategy's training with another strategy's selection."""
    # λ of (λ/2) Σ F (θ − θ*)²; 0 (the paper, and the default) turns it off. The `ewc` strategy's
    # default, 1e5, is the value measured (options §4).
    lambda_: float = Field(0.0, ge=0, alias="lambda")
    fisher_samples: int = Field(1024, ge=1)


class TrainingSpec(SpecModel):
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(16, ge=1, le=4096)
    gradient_accumulation: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    max_length: int = Field(512, ge=16)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    seed: int = 0
    repair: RepairSpec = Field(default_factory=RepairSpec)
    ewc: EwcSpec = Field(default_factory=EwcSpec)

    @model_validator(mode="after")
    def _interleaved_needs_epochs(self) -> TrainingSpec:
        if self.repair.fraction > 0 and self.repair.placement == "interleaved" and self.epochs < 2:
            raise ValueError("training.repair.placement: interleaved adds the risen samples to the epochs after "
                             "the first, so it needs training.epochs >= 2 (or placement: after)")
        return self


class EvalTask(SpecModel):
    skill: str = Field(..., min_length=1)
    path: str = Field(..., min_length=1)
    metric: Literal["exact_match", "iou", "bleu"] = "exact_match"
    name: str | None = None
    image_root: str | None = None  # images are relative to this (default: the file's folder)


class EvalSpec(SpecModel):
    suite: list[EvalTask] = Field(default_factory=list)
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(32, ge=1, le=4096)
    max_samples: int | None = Field(None, ge=1)


class StorageSpec(SpecModel):
    uri: str = Field(..., min_length=1, description="s3://bucket/prefix or a local directory")


class MlflowSpec(SpecModel):
    experiment: str = Field("adapt-inf", min_length=1)
    tracking_uri: str | None = None
    # Each step's adapter as an MLflow model: "register" also adds it to the model registry under
    # the run's name (tracking/model_registry.py), "log" only logs it, "none" neither.
    model: Literal["register", "log", "none"] = "register"

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, uri: str | None) -> str | None:
        # The spec is stored (each step's inputs.json, the CRD object): a password in it would be
        # readable by everyone who can read the store or the run. MLflow takes them from the env.
        if uri and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s]*@", uri):
            raise ValueError("credentials in trackingUri would be stored with the run; set "
                             "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (on a cluster: from a "
                             "Secret) or put the URI in MLFLOW_TRACKING_URI instead")
        return uri


class Toleration(SpecModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


# A Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity, without a sign).
QUANTITY = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"

def _no_repeats(value: Any, keys: list[str], what: str) -> Any:
    """`value` unchanged if `keys` has no repeats; a ValueError naming them otherwise."""
    if dup := sorted({k for k in keys if keys.count(k) > 1}):
        raise ValueError(f"{what} must not repeat: {', '.join(dup)}")
    return value


class StageResources(SpecModel):
    """Scheduling of one stage's Job (operator only; the local runner ignores it), and `threads`:
    the stage's CPU threads on either backend (default: CPU quota and affinity, adaptinf.threads)."""
    gpus: int | None = Field(None, ge=0, le=8)  # one pod, one node: nodes have at most 8
    cpu: str | None = Field(None, pattern=QUANTITY)
    memory: str | None = Field(None, pattern=QUANTITY)  # "16Gi"; "16GB" is no Kubernetes quantity
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    active_deadline_seconds: int | None = Field(None, ge=60)
    backoff_limit: int | None = Field(None, ge=0, le=20)
    threads: int | None = Field(None, ge=1, le=1024)
    # The stage pods' PriorityClass (Kueue takes it as the workload's priority too).
    priority_class_name: str | None = Field(None, min_length=1, max_length=253)
    ephemeral_storage: str | None = Field(None, pattern=QUANTITY)  # a request: local disk of the pod
    # The pod template (docs/install.md "Pod template per stage"); the operator's own labels, env
    # and volumes stay and cannot be overridden.
    affinity: dict[str, Any] | None = None  # a Kubernetes Affinity, passed as it is
    image_pull_secrets: list[str] | None = None  # Secret names
    pod_labels: dict[str, LabelValue] | None = None
    pod_annotations: dict[str, str] | None = None
    runtime_class_name: str | None = Field(None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    env: list[EnvVar] | None = None
    env_from: list[EnvFromSource] | None = None
    volumes: list[PodVolume] | None = None
    volume_mounts: list[VolumeMount] | None = None
    # A memory-backed emptyDir at /dev/shm of this size (0: none, not even for a multi-GPU train).
    shm_size: str | None = Field(None, pattern=QUANTITY)

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if len(name) > 253 or not re.match(DNS_SUBDOMAIN, name):
                raise ValueError(f"{name!r} is no Secret name (a DNS subdomain: lowercase, digits, '-', '.')")
        return v

    @field_validator("pod_labels")
    @classmethod
    def _labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key in v or {}:
            if reserved(key, OPERATOR_LABELS, OPERATOR_LABEL_PREFIXES):
                raise ValueError(f"label {key} is set by the operator (or the Job controller) and cannot be overridden")
            if (why := qualified_name_error(key)) is not None:
                raise ValueError(f"label key {key!r} {why}")
        return v

    @field_validator("pod_annotations")
    @classmethod
    def _annotations(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key in v or {}:
            if reserved(key, (), OPERATOR_ANNOTATION_PREFIXES):
                raise ValueError(f"annotation {key}: the prefix {OPERATOR_ANNOTATION_PREFIXES[0]} is the operator's")
            if (why := qualified_name_error(key)) is not None:
                raise ValueError(f"annotation key {key!r} {why}")
        return v

    # Repeated env names, volume names or mount paths: the API server would refuse the pod.
    @field_validator("env")
    @classmethod
    def _unique_env(cls, v: list[EnvVar] | None) -> list[EnvVar] | None:
        return _no_repeats(v, [e.name for e in v or []], "env names")

    @field_validator("volumes")
    @classmethod
    def _unique_volumes(cls, v: list[PodVolume] | None) -> list[PodVolume] | None:
        return _no_repeats(v, [vol.name for vol in v or []], "volume names")

    @field_validator("volume_mounts")
    @classmethod
    def _unique_mounts(cls, v: list[VolumeMount] | None) -> list[VolumeMount] | None:
        return _no_repeats(v, [posixpath.normpath(m.mount_path) for m in v or []], "mountPaths")

    @field_validator("cpu", "memory", "ephemeral_storage", "shm_size", mode="before")
    @classmethod
    def _whole_number_quantity(cls, v: Any) -> Any:
        """`cpu: 2` is a quantity as much as `cpu: "2"` (Kubernetes' int-or-string); a YAML
        float is not: 0.5 would be read back as 0.5 or 1/2 depending on the tool."""
        if isinstance(v, bool):
            raise ValueError("a quantity is a number or a string such as 500m or 16Gi, not a boolean")
        if isinstance(v, float):
            raise ValueError(f"write a fractional quantity as a string: '{v:g}' or '{round(v * 1000)}m'")
        if isinstance(v, int):
            if v < 0:
                raise ValueError(f"a quantity cannot be negative, got {v}")
            return str(v)
        return v


class ResourcesSpec(SpecModel):
    default: StageResources = Field(default_factory=StageResources)
    extract: StageResources | None = None
    cluster_select: StageResources | None = Field(None, alias="clusterSelect")
    train: StageResources | None = None
    eval: StageResources | None = None
    prune: StageResources | None = None

    def for_stage(self, stage: str) -> StageResources:
        """The stage's own settings laid over the defaults, field by field: a field the stage sets
        replaces the default's as a whole (a list or a map too, an empty one included)."""
        own = getattr(self, stage.replace("-", "_"))
        merged = self.default.model_dump(exclude_none=True)
        if own is not None:
            merged.update(own.model_dump(exclude_none=True))
        return StageResources.model_validate(merged)

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> ResourcesSpec:
        """Every volumeMount in effect for a stage names one of the volumes in effect for it (a
        stage's own `volumes` replace the default's, so its mounts are checked after the merge)."""
        for field, info in type(self).model_fields.items():
            if field == "default":
                continue
            res = self.for_stage(field)
            own = getattr(self, field)
            mounts_from = field if own is not None and own.volume_mounts is not None else "default"
            volumes_from = field if own is not None and own.volumes is not None else "default"
            declared = [v.name for v in res.volumes or []]
            for i, mount in enumerate(res.volume_mounts or []):
                if mount.name in declared:
                    continue
                alias = info.alias or field
                where = f"resources.{'default' if mounts_from == 'default' else alias}.volumeMounts.{i}.name"
                if mount.name in OPERATOR_VOLUMES:
                    raise ValueError(f"{where}: {mount.name!r} is the operator's volume, mounted by it "
                                     f"({INSTEAD[mount.name]})")
                volumes = f"resources.{'default' if volumes_from == 'default' else alias}.volumes"
                raise ValueError(f"{where}: {mount.name!r} is no volume of the {alias} stage "
                                 f"(declared in {volumes}: {', '.join(declared) or 'none'})")
        return self


class LifelongRunSpec(SpecModel):
    model: ModelSpec
    strategy: str = "lite-adapt-inf"
    # The chosen strategy's own knobs (adaptinf.strategy_options, docs/options.md §8); a field of
    # its own because a CRD field cannot be both an enum string and an object.
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    train_budget: int = Field(..., ge=1, description="T: samples trained on per step")
    pool_budget: int | None = Field(None, ge=1, description="D: pool size kept after pruning (Lite)")
    scorers: list[str] = Field(default_factory=lambda: list(DEFAULT_SCORERS), min_length=1)
    extract: ExtractSpec = Field(default_factory=ExtractSpec)
    clustering: ClusteringSpec = Field(default_factory=ClusteringSpec)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    prune: PruneSpec = Field(default_factory=PruneSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    storage: StorageSpec
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    suspend: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _budgets(self) -> LifelongRunSpec:
        if self.pool_budget is not None and self.train_budget > self.pool_budget:
            raise ValueError(
                f"trainBudget (T={self.train_budget}) must not exceed poolBudget (D={self.pool_budget})")
        return self

    @field_validator("scorers")
    @classmethod
    def _unique_scorers(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("scorers must not repeat")
        unknown = [name for name in v if name not in SCORERS]
        if unknown:
            raise ValueError(f"unknown scorer(s) {', '.join(unknown)}; known: {', '.join(SCORERS)}")
        return v

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; known: {', '.join(STRATEGIES)}")
        return v

    @field_validator("strategy_options")
    @classmethod
    def _strategy_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "strategy" not in info.data:   # the strategy itself is invalid: reported on its own
            return v
        return strategy_options.check(info.data["strategy"], v)

    @model_validator(mode="after")
    def _one_hf_token(self) -> LifelongRunSpec:
        """model.tokenSecret gives the stage pods HF_TOKEN: a stage env setting it too is ambiguous."""
        if not self.model.token_secret:
            return self
        for field, info in ResourcesSpec.model_fields.items():
            own = getattr(self.resources, field)
            if own is not None and any(e.name == "HF_TOKEN" for e in own.env or []):
                raise ValueError(f"resources.{info.alias or field}.env: HF_TOKEN comes from model.tokenSecret "
                                 f"({self.model.token_secret}); set one of the two")
        return self

    @model_validator(mode="after")
    def _repair_budget(self) -> LifelongRunSpec:
        """The repair pass trains the same model the step trained: expansion trains a new one each
        step, so old samples' losses there say nothing."""
        if self.training.repair.fraction == 0:
            return self
        if self.strategy == "expansion":
            raise ValueError("training.repair.fraction: the expansion strategy trains a new adapter per step, "
                             "which the repair pass cannot check old samples against; set it to 0")
        return self   # fraction ≤ 0.5 always leaves selection at least half of T

    @model_validator(mode="after")
    def _ewc_penalty(self) -> LifelongRunSpec:
        """training.ewc adds the penalty to a strategy that continues one adapter step by step; `ewc`
        has its own (strategyOptions), `expansion` trains a new adapter per step, `multitask` once."""
        if self.training.ewc.lambda_ == 0 or self.strategy not in ("ewc", "expansion", "multitask"):
            return self
        if self.strategy == "ewc":
            raise ValueError("training.ewc.lambda: the ewc strategy sets its penalty in strategyOptions.lambda; "
                             "set one of the two")
        if self.strategy == "multitask":
            raise ValueError("training.ewc.lambda: multitask trains once on all the data, with no earlier step to "
                             "protect; set it to 0")
        raise ValueError("training.ewc.lambda: the expansion strategy trains a new adapter per step, which the "
                         "penalty cannot anchor to the previous one; set it to 0")

    def effective_strategy_options(self) -> dict[str, Any]:
        """The strategy's options in effect: its defaults updated with strategyOptions."""
        return strategy_options.resolve(self.strategy, self.strategy_options)


class InstructionDatasetSpec(SpecModel):
    run: str = Field(..., min_length=1, description="name of the LifelongRun this dataset extends")
    source: str = Field(..., min_length=1, description="JSON/JSONL file: local path or s3:// URI")
    image_root: str | None = None
    format: Literal["auto", "json", "jsonl"] = "auto"
    # Orders steps when several datasets arrive together; ties go by creation time, then name.
    order: int | None = Field(None, ge=0)


class Resource(BaseModel):
    """A parsed LifelongRun or InstructionDataset with where it came from."""
    model_config = ConfigDict(arbitrary_types_allowed=True)

    kind: str
    name: str
    namespace: str = "default"
    spec: Any
    origin: Path | None = None  # the YAML file, to resolve relative paths against

    @overload
    def resolve(self, path: str) -> str: ...

    @overload
    def resolve(self, path: None) -> None: ...

    def resolve(self, path: str | None) -> str | None:
        """A path from the spec: URIs and absolute paths as-is, others relative to the YAML."""
        if path is None or "://" in path or Path(path).is_absolute() or self.origin is None:
            return path
        return str((self.origin.parent / path).resolve())

    def resolved_spec(self) -> Any:
        """The spec with every relative file path made absolute against the YAML's folder.

        A model name that is not an existing relative path stays as it is: it is a hub id
        (`llava-hf/llava-1.5-7b-hf` looks like a relative path too).
        """
        spec = self.spec.model_copy(deep=True)
        if isinstance(spec, LifelongRunSpec):
            spec.storage.uri = self.resolve(spec.storage.uri)
            spec.model.base = self._resolve_model(spec.model.base)
            if spec.extract.proxy_model:
                spec.extract.proxy_model = self._resolve_model(spec.extract.proxy_model)
            for task in spec.eval.suite:
                task.path = self.resolve(task.path)
                task.image_root = self.resolve(task.image_root)
        else:
            spec.source = self.resolve(spec.source)
            spec.image_root = self.resolve(spec.image_root)
        return spec

    def _resolve_model(self, name: str) -> str:
        local = self.resolve(name)
        if local and Path(local).exists():
            return local
        # `./model`, `../x/y`, `a/b/c` can only be paths: keep them absolute, so that a typo
        # reads "local path … does not exist" rather than a hub lookup.
        path_like = name.startswith((".", "~")) or name.count("/") > 1
        return local if path_like and local else name


_KINDS: dict[str, type[SpecModel]] = {"LifelongRun": LifelongRunSpec, "InstructionDataset": InstructionDatasetSpec}


def error_line(e: Any) -> str:
    """`spec.<field>: <message>` for one pydantic error; a validator whose message starts with a
    path below its field (strategyOptions.<key>: ...) names that path instead."""
    loc = ".".join(str(p) for p in e["loc"]) or "(spec)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["loc"] and msg.startswith(f"{loc}.") and ": " in msg:
        return f"spec.{msg}"
    if not e["loc"] and re.match(r"^[a-zA-Z][\w.]*: ", msg):   # a whole-spec rule naming its field
        return f"spec.{msg}"
    return f"spec.{loc}: {e['msg']}"


def _format_errors(where: str, err: ValidationError) -> str:
    return f"{where} is invalid:\n" + "\n".join(f"  {error_line(e)}" for e in err.errors())


def parse_resource(obj: Any, origin: Path | None = None) -> Resource:
    """Validate one Kubernetes-style object (dict) into a Resource; raise SpecError naming fields."""
    where = str(origin) if origin else "resource"
    if not isinstance(obj, dict):
        raise SpecError(f"{where}: expected a mapping with apiVersion/kind/metadata/spec")
    kind = obj.get("kind")
    if kind not in _KINDS:
        raise SpecError(f"{where}: kind must be one of {sorted(_KINDS)}, got {kind!r}")
    api = obj.get("apiVersion")
    if api != FULL_API_VERSION:
        raise SpecError(f"{where}: apiVersion must be {FULL_API_VERSION!r}, got {api!r}")
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 63:
        raise SpecError(f"{where}: metadata.name {name!r} must be a DNS-1123 label (lowercase, digits, '-')")
    where = f"{kind} {name!r}" + (f" ({origin})" if origin else "")
    try:
        spec = _KINDS[kind].model_validate(obj.get("spec") or {})
    except ValidationError as err:
        raise SpecError(_format_errors(where, err)) from None
    return Resource(kind=kind, name=name, namespace=meta.get("namespace") or "default", spec=spec, origin=origin)


def load_resources(path: str | Path) -> list[Resource]:
    """All resources in a YAML file (multi-document files allowed)."""
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    return [parse_resource(d, origin=path.resolve()) for d in docs]


def to_manifest(res: Resource) -> dict[str, Any]:
    """The Kubernetes object for a resource (what `kubectl apply` would send)."""
    return {"apiVersion": FULL_API_VERSION, "kind": res.kind,
            "metadata": {"name": res.name, "namespace": res.namespace}, "spec": res.spec.to_dict()}


def repair_slots(spec: LifelongRunSpec) -> int:
    """R: the samples of T held back from selection for the repair pass (0 when it is off)."""
    return round(spec.training.repair.fraction * spec.train_budget)


def selection_budget(spec: LifelongRunSpec) -> int:
    """The samples the strategy selects: T less the repair pass's share."""
    return spec.train_budget - repair_slots(spec)
