{{/*
Every name and label the chart writes. The twin of operator/mlmodel_operator/names.py: the same
`app.kubernetes.io/*` keys, with `part-of: mlmodel`; names are cut to 63 characters.
*/}}

{{/* The chart name: `mlmodel`, or nameOverride. */}}
{{- define "mlmodel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: fullnameOverride, else the release name (with the chart name
unless it is already in it). */}}
{{- define "mlmodel.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* fullname-suffix, still at most 63 characters: call with (list $ "suffix"). */}}
{{- define "mlmodel.suffixedName" -}}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "mlmodel.fullname" (index . 0) | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/* The operator's objects: Deployment, Service, ClusterRole(Binding)s, Roles. */}}
{{- define "mlmodel.operator.fullname" -}}
{{- include "mlmodel.suffixedName" (list . "operator") }}
{{- end }}

{{/* `app.kubernetes.io/name` of the operator, as the server's is `mlmodel-server`. */}}
{{- define "mlmodel.operator.name" -}}
{{- printf "%s-operator" (include "mlmodel.name" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "mlmodel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "mlmodel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlmodel.operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The NetworkPolicy peers (JSON) that select the operator's pods: routers admit them to their admin port. */}}
{{- define "mlmodel.operatorPeers" -}}
{{- $pods := dict "matchLabels" (include "mlmodel.selectorLabels" . | fromYaml) -}}
{{- $namespace := dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace) -}}
{{- list (dict "namespaceSelector" $namespace "podSelector" $pods) | toJson -}}
{{- end }}

{{/* Labels that select the router pods of every ModelDeployment (names.router_selector, but its instance). */}}
{{- define "mlmodel.routerSelectorLabels" -}}
app.kubernetes.io/name: mlmodel-router
app.kubernetes.io/component: router
{{- end }}

{{/* Labels common to every object of the release; each adds its own component. */}}
{{- define "mlmodel.commonLabels" -}}
app.kubernetes.io/part-of: mlmodel
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ include "mlmodel.chart" . }}
{{- end }}

{{/* All labels of the operator's objects. */}}
{{- define "mlmodel.labels" -}}
{{ include "mlmodel.selectorLabels" . }}
{{ include "mlmodel.commonLabels" . | trim }}
{{- end }}

{{/* Labels of the release's other objects: call with (list $ "component"). */}}
{{- define "mlmodel.componentLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "mlmodel.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{ include "mlmodel.commonLabels" $ctx }}
{{- end }}

{{- define "mlmodel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlmodel.operator.fullname" .) .Values.serviceAccount.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository[:tag][@digest] of an image value; the digest wins over the tag. Call with
(list image-values default-tag). */}}
{{- define "mlmodel.image" -}}
{{- $image := index . 0 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (toString (default (index . 1) $image.tag)) }}
{{- end }}
{{- end }}

{{/* The restricted Pod Security profile, for a pod and for a container. */}}
{{- define "mlmodel.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mlmodel.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* What the operator does in the namespaces it serves (charts/tests/golden/rbac.yaml lists it). */}}
{{- define "mlmodel.operator.namespacedRules" }}
# The resource it reconciles; kopf keeps its progress in annotations.
- apiGroups: [mlmodel.io]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch]
- apiGroups: [mlmodel.io]
  resources: [modeldeployments/status]
  verbs: [get, patch]
# Children carry an owner reference with blockOwnerDeletion: clusters that enforce owner
# references (OwnerReferencesPermissionEnforcement, on in the test cluster) require this.
- apiGroups: [mlmodel.io]
  resources: [modeldeployments/finalizers]
  verbs: [update]
# The children it owns: watched by label into a cache that passes read, read by name when
# missing there (someone else's?), applied and deleted.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
# The weighted router: its configuration, its weights and its disruption budget.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
# Who may reach the servers and routers (networkPolicy.enabled); listed even when off, to delete old ones.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
# A registry model's credentials (spec.mlflow.credentialsSecret), read by name when it is resolved: never
# listed or watched, and only from the ModelDeployment's own namespace.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Pods are watched for readiness and failures (termination messages); Events are created (core/v1 only).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Refuse settings that cannot work together. */}}
{{- define "mlmodel.validate" -}}
{{- if and (eq .Values.rbac.scope "namespace") (not .Values.watchNamespaces) }}
{{- fail "rbac.scope=namespace needs watchNamespaces: the namespaces the operator may act in" }}
{{- end }}
{{- end }}
