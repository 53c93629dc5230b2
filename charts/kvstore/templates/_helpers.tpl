{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "kvstore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name: <release>-<chart>, or just the release name when it already contains the chart
name. Truncated so that "-operator" and other suffixes still fit a DNS label. */}}
{{- define "kvstore.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kvstore.operatorName" -}}
{{- printf "%s-operator" (include "kvstore.fullname" .) -}}
{{- end -}}

{{- define "kvstore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object of the chart. */}}
{{- define "kvstore.labels" -}}
helm.sh/chart: {{ include "kvstore.chart" . }}
app.kubernetes.io/name: {{ include "kvstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of the operator's pod. */}}
{{- define "kvstore.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kvstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kvstore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kvstore.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "kvstore.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kvstore.nodeImage" -}}
{{- default (include "kvstore.image" .) .Values.operator.nodeImage -}}
{{- end -}}

{{/* The backup claim of the KVStore the chart creates. */}}
{{- define "kvstore.backupClaim" -}}
{{- default (printf "%s-backups" .Values.store.name) .Values.store.backup.claim.name -}}
{{- end -}}

{{/* The namespaced RBAC rules of the operator: docs/operator.md, "RBAC" (exactly the verbs it
uses; tests/chart checks the two against each other). */}}
{{- define "kvstore.namespacedRules" -}}
- apiGroups: ["kvstore.dev"]
  resources: ["kvstores"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kvstore.dev"]
  resources: ["kvstores/status"]
  verbs: ["get", "patch"]
- apiGroups: ["kvstore.dev"]
  resources: ["kvbackups"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["kvstore.dev"]
  resources: ["kvbackups/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* The cluster-scoped rules: whether a stuck pod's Node is NotReady. */}}
{{- define "kvstore.clusterRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get"]
{{- end -}}
