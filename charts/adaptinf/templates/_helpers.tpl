{{/* Names ----------------------------------------------------------------------------------- */}}

{{- define "adaptinf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "adaptinf.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "adaptinf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "adaptinf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "adaptinf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "adaptinf.labels" -}}
helm.sh/chart: {{ include "adaptinf.chart" . }}
app.kubernetes.io/name: {{ include "adaptinf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: adaptinf
{{- end -}}

{{- define "adaptinf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "adaptinf.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Stage pods' ServiceAccount: "" means the namespace's default account. */}}
{{- define "adaptinf.stageServiceAccountName" -}}
{{- if .Values.stage.serviceAccount.create -}}
{{- default (printf "%s-stage" (include "adaptinf.fullname" .)) .Values.stage.serviceAccount.name -}}
{{- else -}}
{{- .Values.stage.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespace the operator watches in namespace mode ("" in cluster mode). */}}
{{- define "adaptinf.watchNamespace" -}}
{{- if eq .Values.watch.mode "namespace" -}}
{{- default .Release.Namespace .Values.watch.namespace -}}
{{- end -}}
{{- end -}}

{{/* Where namespaced helpers of the stage pods go: the watched namespace, else the release's. */}}
{{- define "adaptinf.stageNamespace" -}}
{{- default .Release.Namespace (include "adaptinf.watchNamespace" .) -}}
{{- end -}}

{{/* The Kopf peering object every adaptinf operator on the same objects shares. */}}
{{- define "adaptinf.peeringName" -}}
{{- .Values.peering.name -}}
{{- end -}}

{{/* repository:tag or repository@digest; tag defaults to the chart's appVersion. */}}
{{- define "adaptinf.imageRef" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Default artifact store: storage.uri, else s3://<bucket>/<prefix>, else "". */}}
{{- define "adaptinf.store" -}}
{{- $s := .Values.storage -}}
{{- if and $s.uri $s.s3.bucket -}}
{{- fail "storage: set either storage.uri or storage.s3.bucket, not both" -}}
{{- end -}}
{{- if $s.uri -}}
{{- $s.uri -}}
{{- else if $s.s3.bucket -}}
{{- $prefix := trimAll "/" $s.s3.prefix -}}
{{- if $prefix -}}
{{- printf "s3://%s/%s" $s.s3.bucket $prefix -}}
{{- else -}}
{{- printf "s3://%s" $s.s3.bucket -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
RBAC rules of the operator: exactly the API requests it makes, no more. tests/chart/test_chart_rbac.py
runs the operator (the chart's own command and env) against the API emulator of tests/k8s, records
every request, and fails if one is denied or if a verb x resource here is never used. Change the
operator and these rules together.
*/}}
{{- define "adaptinf.rules" -}}
# LifelongRuns: Kopf lists/watches them and keeps its finalizer and progress annotations on them
# (patch); the reconciler reads each run (get) and writes .status through the status subresource.
- apiGroups: ["adaptinf.dev"]
  resources: ["lifelongruns"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["adaptinf.dev"]
  resources: ["lifelongruns/status"]
  verbs: ["patch"]
# InstructionDatasets: watched (Kopf), listed per reconcile; the operator writes their status and
# keeps its adaptinf.dev/step finalizer on a dataset while its step runs (patch).
- apiGroups: ["adaptinf.dev"]
  resources: ["instructiondatasets"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["adaptinf.dev"]
  resources: ["instructiondatasets/status"]
  verbs: ["patch"]
# Stage Jobs: created per stage and step, watched and listed, annotated once reported and their
# adaptinf.dev/outcome finalizer removed once recorded (patch), deleted on retry and with their run.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "list", "watch", "patch", "delete"]
# Stage pods: listed to notice pods stuck Pending (unschedulable: no free GPU node).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Kubernetes Events about runs and datasets (Kopf's poster); listed for a Job that has no pod
# (the Job controller's FailedCreate: quota, a missing ServiceAccount, an admission policy).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
{{- end -}}

{{/*
Cluster-scoped extras of cluster mode: Kopf watches CRDs to notice resources appearing at run time
(it tolerates a 403 here, with a warning, which is what happens in namespace mode).
*/}}
{{- define "adaptinf.clusterRules" -}}
# Kopf (cluster mode only): CRDs added or changed while it runs.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}

{{/* The model cache PVC the stage pods mount ("" = none): modelCache.existingClaim, else the chart's. */}}
{{- define "adaptinf.modelCacheClaim" -}}
{{- if .Values.modelCache.enabled -}}
{{- default (printf "%s-model-cache" (include "adaptinf.fullname" .)) .Values.modelCache.existingClaim -}}
{{- end -}}
{{- end -}}

{{/*
Kopf peering: the operator watches its peering object and patches its keep-alive into the
object's status. Cluster mode uses a ClusterKopfPeering, namespace mode a KopfPeering in the
watched namespace (templates/peering.yaml).
*/}}
{{- define "adaptinf.peeringRules" -}}
{{- if .Values.peering.enabled }}
# Kopf peering: its keep-alive in the peering object, and the other operators' there.
- apiGroups: ["kopf.dev"]
  resources: [{{ if include "adaptinf.watchNamespace" . }}"kopfpeerings"{{ else }}"clusterkopfpeerings"{{ end }}]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end -}}
