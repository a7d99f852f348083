"""What the CRDs say that the spec models do not: the one place for it.

`adaptinf.crd_schema` generates each CRD's `openAPIV3Schema` from the pydantic models in
`adaptinf.spec` / `adaptinf.pod_template` (fields, types, bounds, patterns, enums of `Literal`s,
defaults, `required`) and lays over it what only a Kubernetes schema can say:

- `CRDS`: each resource's names, printer columns, selectable fields and status schema;
- `MODEL_EXTRAS` / `FIELD_EXTRAS`: CEL rules (`x-kubernetes-validations`: cross-field rules and
  immutable fields), the structural forms of what the models check in validators (one-of value
  sources, a Volume's single source, label values, Secret names, the registries' enums),
  `kubectl explain` descriptions.

An extra may add keywords to a generated node (deep-merged) but never change one the model
generated, except `description`; the generator refuses a conflict. A model used in several
places (StageResources: `resources.default`, `.train`, …) gets its extras everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from adaptinf.pod_template import DNS_SUBDOMAIN, LABEL_VALUE, EnvFromSource, EnvVar, EnvVarSource, PodVolume
from adaptinf.spec import (QUANTITY, SCORERS, STRATEGIES, ClusteringSpec, EvalTask, ExtractSpec,
                           InstructionDatasetSpec, LifelongRunSpec, MlflowSpec, ModelSpec, StageResources,
                           StorageSpec, TrainingSpec)

Node = dict[str, Any]

# On every CRD.
LABELS = {"app.kubernetes.io/name": "adaptinf", "app.kubernetes.io/part-of": "adaptinf"}
# Not `all`: `kubectl delete all --all` must not delete months-long runs.
CATEGORIES = ["adaptinf"]

# Stage Jobs carry the resource names as label values (adaptinf.dev/run, adaptinf.dev/dataset):
# 63 characters at most, as spec.parse_resource checks too.
METADATA: Node = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}}

# A string field constrained by spec.QUANTITY is a Kubernetes quantity: the models take a whole
# number too (StageResources._whole_number_quantity), non-negative.
QUANTITY_NODE: Node = {"x-kubernetes-int-or-string": True, "minimum": 0, "pattern": QUANTITY}

IMMUTABLE_RULE = "self == oldSelf"


def immutable(message: str) -> Node:
    """A transition rule refusing any change of the field (tests/k8s/schema.py checks it)."""
    return {"x-kubernetes-validations": [{"rule": IMMUTABLE_RULE, "message": message}]}


def quantity(description: str) -> Node:
    return {"description": f"a Kubernetes quantity: {description}"}


# metav1.Condition, as the operator writes it (operator/status.py set_condition).
CONDITIONS: Node = {
    "type": "array",
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
    "items": {
        "type": "object",
        "description": "shaped like metav1.Condition",
        "required": ["type", "status", "reason", "message", "lastTransitionTime"],
        "properties": {
            "type": {"type": "string", "maxLength": 316,
                     "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                                r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "minLength": 1, "maxLength": 1024,
                       "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
            "message": {"type": "string", "maxLength": 32768},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "minimum": 0},
        },
    },
}


def _integer(description: str | None = None) -> Node:
    return {"type": "integer", **({"description": description} if description else {})}


def _string(description: str | None = None) -> Node:
    return {"type": "string", **({"description": description} if description else {})}


# The status the operator writes (operator/status.py); no model: only the operator writes it.
RUN_STATUS: Node = {
    "type": "object",
    "description": "Small by design; per-step history lives in the store (summary.json) and MLflow.",
    "properties": {
        "phase": {"type": "string", "enum": ["Pending", "Queued", "Running", "Succeeded", "Suspended", "Failed"]},
        "step": _integer("current or last finished step (0-based)"),
        "stage": _string(),
        "dataset": _string("the InstructionDataset of `step`"),
        "stepsCompleted": _integer(),
        "nextStep": _integer("the first step number no dataset has taken; a new dataset never gets a lower one"),
        "poolSize": _integer(),
        "selected": _integer(),
        "avgAcc": {"type": "number"},
        "forgettingRate": {"type": "number"},
        "mlflowRunId": _string(),
        "observedGeneration": _integer(),
        "failure": {
            "type": "object",
            "description": "the failed stage, kept until a retry even if its Job is deleted (ttlSecondsAfterFinished)",
            "properties": {"step": _integer(), "stage": _string(), "dataset": _string(), "job": _string(),
                           "reason": _string(), "message": _string()},
        },
        "conditions": CONDITIONS,
    },
}

DATASET_STATUS: Node = {
    "type": "object",
    "properties": {
        "run": _string(),
        "runUid": _string("uid of the LifelongRun object the step belongs to"),
        "step": _integer("the run's time step this dataset became (0-based)"),
        "phase": {"type": "string", "enum": ["Queued", "Running", "Succeeded", "Failed"]},
        "stage": _string(),
        "accepted": _integer(),
        "rejected": _integer(),
        "observedGeneration": _integer(),
        "conditions": CONDITIONS,
    },
}


@dataclass(frozen=True)
class CrdInfo:
    """One custom resource's CRD document around its generated spec schema."""
    kind: str
    plural: str
    short_name: str
    spec_model: type[BaseModel]
    description: str
    status: Node
    printer_columns: list[Node]
    # `kubectl get --field-selector` on these (Kubernetes >= 1.30: spec.versions[].selectableFields).
    selectable_fields: list[str] = field(default_factory=list)


def _column(name: str, type_: str, path: str, description: str | None = None, priority: int | None = None) -> Node:
    col: Node = {"name": name, "type": type_, "jsonPath": path}
    if description:
        col["description"] = description
    if priority is not None:
        col["priority"] = priority
    return col


AGE = _column("Age", "date", ".metadata.creationTimestamp")

CRDS: dict[str, CrdInfo] = {
    "LifelongRun": CrdInfo(
        kind="LifelongRun", plural="lifelongruns", short_name="llr", spec_model=LifelongRunSpec,
        description="A lifelong instruction-tuning run; each InstructionDataset naming it is one time step.",
        status=RUN_STATUS,
        printer_columns=[
            _column("Step", "integer", ".status.step", "Current (or last finished) time step"),
            _column("Stage", "string", ".status.stage", "Stage of the current step"),
            _column("Phase", "string", ".status.phase"),
            _column("Pool", "integer", ".status.poolSize", "Samples in the pool"),
            _column("AvgAcc", "number", ".status.avgAcc", "Average accuracy over the eval suite"),
            _column("Forgetting", "number", ".status.forgettingRate", "Forgetting rate (percent)"),
            _column("Strategy", "string", ".spec.strategy", priority=1),
            AGE,
        ]),
    "InstructionDataset": CrdInfo(
        kind="InstructionDataset", plural="instructiondatasets", short_name="ids", spec_model=InstructionDatasetSpec,
        description="One time step's instruction data for the LifelongRun named in spec.run.",
        status=DATASET_STATUS,
        # The operator lists a run's datasets by it (Kubernetes >= 1.31; an older server drops the
        # field and refuses the selector, and the operator filters the namespace's list itself).
        selectable_fields=[".spec.run"],
        printer_columns=[
            _column("Run", "string", ".spec.run"),
            _column("Step", "integer", ".status.step"),
            _column("Phase", "string", ".status.phase"),
            _column("Accepted", "integer", ".status.accepted", "Records that passed ingest"),
            _column("Rejected", "integer", ".status.rejected",
                    "Records rejected at ingest (see the step's ingest/report.json)"),
            _column("Source", "string", ".spec.source", priority=1),
            AGE,
        ]),
}

# Extras of a model's object node, wherever the model appears.
MODEL_EXTRAS: dict[type[BaseModel], Node] = {
    LifelongRunSpec: {"x-kubernetes-validations": [
        {"rule": "!has(self.poolBudget) || self.trainBudget <= self.poolBudget",
         "message": "trainBudget (T) must not exceed poolBudget (D)"},
        # LifelongRunSpec._repair_budget.
        {"rule": "!has(self.strategy) || self.strategy != 'expansion' || !has(self.training) "
                 "|| !has(self.training.repair) || !has(self.training.repair.fraction) "
                 "|| self.training.repair.fraction == 0.0",
         "message": "training.repair.fraction: the expansion strategy trains a new adapter per step; set it to 0"},
        # LifelongRunSpec._ewc_penalty.
        {"rule": "!has(self.strategy) || !(self.strategy in ['ewc', 'expansion', 'multitask']) "
                 "|| !has(self.training) || !has(self.training.ewc) || !has(self.training.ewc.lambda) "
                 "|| self.training.ewc.lambda == 0.0",
         "message": "training.ewc.lambda: not with the ewc strategy (strategyOptions.lambda), expansion "
                    "(a new adapter per step) or multitask (one training); set it to 0"}]},
    # TrainingSpec._interleaved_needs_epochs (the API server fills in the defaults before these run).
    TrainingSpec: {"x-kubernetes-validations": [
        {"rule": "!has(self.repair) || self.repair.fraction == 0.0 || self.repair.placement != 'interleaved' "
                 "|| self.epochs >= 2",
         "message": "training.repair.placement: interleaved needs training.epochs >= 2 (or placement: after)"}]},
    ClusteringSpec: {"x-kubernetes-validations": [
        {"rule": "self.kMax >= self.kMin", "message": "clustering.kMax must be >= clustering.kMin"}]},
    # ExtractSpec._refresh_parameters (the API server fills in the defaults before these run).
    ExtractSpec: {"x-kubernetes-validations": [
        {"rule": "has(self.refreshEvery) == (self.refresh == 'every-n-steps')",
         "message": "extract.refreshEvery is required with, and only read by, extract.refresh: every-n-steps"},
        {"rule": "has(self.refreshFraction) == (self.refresh == 'fraction')",
         "message": "extract.refreshFraction is required with, and only read by, extract.refresh: fraction"},
        {"rule": "self.refresh == 'every-step' || (!has(self.proxyModel) && self.reuseFeatures)",
         "message": "extract.refresh other than every-step needs the trained model (no extract.proxyModel) "
                    "and extract.reuseFeatures: true"}]},
    # The model validators' one-of rules (pod_template._one_of, EnvVar._value_or_ref).
    EnvVar: {"not": {"required": ["value", "valueFrom"]}},
    EnvVarSource: {"oneOf": [{"required": ["secretKeyRef"]}, {"required": ["configMapKeyRef"]}]},
    EnvFromSource: {"oneOf": [{"required": ["secretRef"]}, {"required": ["configMapRef"]}]},
    # A name and exactly one volume source (PodVolume._one_source).
    PodVolume: {"minProperties": 2, "maxProperties": 2},
}

# Extras of one field's node: (model, the field's camelCase name) → keywords.
FIELD_EXTRAS: dict[tuple[type[BaseModel], str], Node] = {
    (ModelSpec, "base"): {"description": "local path, s3:// URI or hub id; immutable", **immutable(
        "spec.model.base is immutable: the adapters of a run belong to one base model; create a new run")},
    (ModelSpec, "revision"): {"description": "a hub base's branch, tag or commit, passed to every from_pretrained "
                                             "(hub ids only); immutable", **immutable(
        "spec.model.revision is immutable: the adapters of a run belong to one base model; create a new run")},
    (ModelSpec, "tokenSecret"): {"description": "a Secret whose key HF_TOKEN the stage pods get as HF_TOKEN "
                                                "(gated hub models)"},
    (ModelSpec, "cacheDir"): {"description": "where hub downloads and s3:// bases are cached (default: "
                                             "ADAPTINF_MODEL_CACHE, the chart's model cache volume)"},
    (MlflowSpec, "model"): {"description": "each step's adapter as an MLflow model; register: also in the model "
                                           "registry under the run's name"},
    (StorageSpec, "uri"): {"description": "s3://bucket/prefix or a local directory; immutable", **immutable(
        "spec.storage.uri is immutable: the run's markers and adapters live there; create a new run")},
    # The registries' names (adaptinf.manifest): the spec checks them in validators.
    (LifelongRunSpec, "strategy"): {
        "enum": list(STRATEGIES),
        "description": "selection strategy (spec.STRATEGIES; no STRATEGY@VARIANT here, that is for compare only)"},
    (LifelongRunSpec, "strategyOptions"): {
        # Names and types depend on the strategy: the operator checks them (adaptinf.strategy_options).
        "description": "the strategy's own options, e.g. {temperature: 0.2} for density (docs/options.md §8)"},
    (LifelongRunSpec, "scorers"): {"x-kubernetes-list-type": "set", "items": {"enum": list(SCORERS)}},
    (LifelongRunSpec, "suspend"): {"description": "pause before the next stage; a running stage finishes"},
    (ExtractSpec, "layers"): {"description": "decoder-layer indices or middle/first/last/all"},
    (ExtractSpec, "shards"): {"description": "extract runs as an Indexed Job with this many pods"},
    (ExtractSpec, "refresh"): {"description": "when the trained model's features are recomputed: every-step "
                                              "(the paper), every-n-steps, fraction (docs/options.md §3)"},
    (ExtractSpec, "refreshEvery"): {"description": "every-n-steps: a sample's features are recomputed once they "
                                                   "are this many steps old"},
    (ExtractSpec, "refreshFraction"): {"description": "fraction: the share of the old pool recomputed per step, "
                                                      "stratified by the previous step's clusters"},
    (ExtractSpec, "reuseFeatures"): {"description": "with a proxy model, reuse the features of samples an earlier "
                                                    "step computed"},
    (EvalTask, "imageRoot"): {"description": "images are relative to this (default: the file's folder)"},
    (LifelongRunSpec, "resources"): {
        "description": "scheduling of the stage Jobs; a stage's own entry is laid over `default`"},
    (StageResources, "gpus"): {"description": "GPUs of one pod (one node; nodes have at most 8)"},
    (StageResources, "cpu"): quantity("500m, 2 (a number or a string)"),
    (StageResources, "memory"): quantity("16Gi (not 16GB)"),
    (StageResources, "ephemeralStorage"): quantity("the ephemeral-storage request (local disk), 50Gi"),
    (StageResources, "shmSize"): quantity("a memory-backed /dev/shm of this size (0: none)"),
    (StageResources, "priorityClassName"): {
        "description": "PriorityClass of the stage pods (Kueue reads it as the priority)"},
    (StageResources, "affinity"): {
        "description": "a Kubernetes Affinity (nodeAffinity, podAffinity, podAntiAffinity), "
                       "given to the pods as it is"},
    (StageResources, "imagePullSecrets"): {
        "description": "names of Secrets to pull the stage image with",
        "items": {"minLength": 1, "maxLength": 253, "pattern": DNS_SUBDOMAIN}},   # StageResources._secret_names
    (StageResources, "podLabels"): {
        "description": "extra labels of the stage pods (not the operator's own keys)",
        "additionalProperties": {"maxLength": 63, "pattern": LABEL_VALUE}},      # pod_template._label_value
    (StageResources, "podAnnotations"): {"description": "extra annotations of the stage pods"},
    (StageResources, "runtimeClassName"): {"description": "RuntimeClass of the stage pods"},
    (StageResources, "env"): {
        "description": "extra variables of the stage container (not the operator's own, docs/contracts.md §1)"},
    (StageResources, "envFrom"): {
        "description": "every key of a Secret or ConfigMap as a variable (the operator's env wins)"},
    (StageResources, "volumes"): {
        "description": "Kubernetes Volumes, passed as they are (a name and one volume source)"},
    (StageResources, "volumeMounts"): {
        "description": "mounts of the stage container; each names a volume in effect for the stage"},
    (EnvVar, "value"): {"description": "a literal (stored with the run; nothing secret)"},
    (InstructionDatasetSpec, "run"): {
        "description": "name of the LifelongRun (same namespace) this dataset extends; immutable", **immutable(
            "spec.run is immutable: a step that started cannot move to another run; delete the dataset and "
            "create a new one")},
    (InstructionDatasetSpec, "order"): {
        "description": "orders steps when several datasets arrive together; ties go by creation time, then name"},
}

