{{/* Chart name, overridable. */}}
{{- define "mfa-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of every object: the release name, plus the chart name unless the release
name already contains it (so `helm install mfa-operator` gives "mfa-operator").
*/}}
{{- define "mfa-operator.fullname" -}}
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

{{- define "mfa-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mfa-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mfa-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mfa-operator.labels" -}}
helm.sh/chart: {{ include "mfa-operator.chart" . }}
{{ include "mfa-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: mfa-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mfa-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mfa-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret in the release namespace holding the operator's integrity (HMAC) key. */}}
{{- define "mfa-operator.integrityKeySecret" -}}
{{- printf "%s-integrity-key" (include "mfa-operator.fullname" .) }}
{{- end }}

{{/* The image: `repository@digest` when image.digest is set (the tag is then not used), else `repository:tag`. */}}
{{- define "mfa-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: forced by the value, or `auto` and replicas > 1. */}}
{{- define "mfa-operator.leaderElection" -}}
{{- $enabled := .Values.leaderElection.enabled }}
{{- if eq (toString $enabled) "auto" }}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- else if $enabled }}true
{{- end }}
{{- end }}

{{/*
Exactly the calls the operator makes, each rule with the code that needs it. A verb
the operator does not call is not here (tests/rbac.rs runs a full enrollment as this
ServiceAccount and checks that other calls are refused).
*/}}
{{/* The watched namespaces, comma-separated (empty: every namespace). */}}
{{- define "mfa-operator.watchNamespaces" -}}
{{- $all := .Values.watchNamespaces -}}
{{- with .Values.watchNamespace }}{{ $all = append $all . }}{{ end -}}
{{- $all | uniq | join "," -}}
{{- end }}

{{- define "mfa-operator.rules" -}}
# The controller lists and watches MfaEnrollments; the finalizer is added and removed
# with a JSON patch of metadata.finalizers.
- apiGroups: ["iam.mfa-operator.dev"]
  resources: ["mfaenrollments"]
  verbs: ["list", "watch", "patch"]
# Status is written with server-side apply on the status subresource.
- apiGroups: ["iam.mfa-operator.dev"]
  resources: ["mfaenrollments/status"]
  verbs: ["patch"]
# Seed Secrets carry a controller ownerReference with blockOwnerDeletion, which the
# OwnerReferencesPermissionEnforcement admission plugin only allows with this.
- apiGroups: ["iam.mfa-operator.dev"]
  resources: ["mfaenrollments/finalizers"]
  verbs: ["update"]
# Seed Secrets: watched as metadata, listed by label, created with the seed, patched to
# clear refused codes, deleted once the device is enabled or the enrollment is gone.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Events about MfaEnrollments (kube's Recorder creates, then patches a repeated Event).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
