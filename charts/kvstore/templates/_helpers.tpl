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

{{/* The operator's app name, "<name>-operator". Never "kvstore": a store's pods are selected by
app.kubernetes.io/name=kvstore and app.kubernetes.io/instance=<store> (the operator's
names.selector_labels), and with the release named like the store, an operator pod labelled
"kvstore" would join the store's Services and PodDisruptionBudget. */}}
{{- define "kvstore.operatorAppName" -}}
{{- printf "%s-operator" (include "kvstore.name" .) -}}
{{- end -}}

{{/* Labels of the operator's objects: the chart's labels with the operator's app name (which
wins over commonLabels). */}}
{{- define "kvstore.operatorLabels" -}}
{{- $labels := include "kvstore.labels" . | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/name" (include "kvstore.operatorAppName" .) -}}
{{- $_ = set $labels "app.kubernetes.io/component" "operator" -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* Selector labels of the operator's pod. */}}
{{- define "kvstore.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kvstore.operatorAppName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels of the operator's pod: its podLabels, then the operator's labels, which win (a podLabel
cannot put the pod into a store's selector). */}}
{{- define "kvstore.operatorPodLabels" -}}
{{- $labels := merge (include "kvstore.operatorLabels" . | fromYaml) (deepCopy (.Values.operator.podLabels | default dict)) -}}
{{- toYaml $labels -}}
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

{{/* The namespaced RBAC rules of the operator: docs/kubernetes.md, "RBAC" (exactly the verbs it
uses; tests/chart/test_rbac.py checks them against that table and against the calls in the
operator's code, and tests/operator grants exactly these to the operator under test). */}}
{{- define "kvstore.namespacedRules" -}}
- apiGroups: ["kvstore.dev"]
  resources: ["kvstores"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kvstore.dev"]
  resources: ["kvstores/status"]
  verbs: ["patch"]
- apiGroups: ["kvstore.dev"]
  resources: ["kvbackups"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["kvstore.dev"]
  resources: ["kvbackups/status"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "delete"]
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
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* The namespaces the operator serves, as a JSON list: operator.watchNamespaces, or the release
namespace alone when that is empty; "[]" (every namespace) only with operator.clusterWide. */}}
{{- define "kvstore.watchedNamespaces" -}}
{{- if .Values.operator.clusterWide -}}
{{- if .Values.operator.watchNamespaces -}}
{{- fail "operator.clusterWide serves every namespace: leave operator.watchNamespaces empty, or set clusterWide to false" -}}
{{- end -}}
{{- toJson list -}}
{{- else -}}
{{- toJson (.Values.operator.watchNamespaces | default (list .Release.Namespace)) -}}
{{- end -}}
{{- end -}}

{{/* The leader election's rules (operator/kvoperator/leader.py): a Lease in the operator's own
namespace, as a Role there whatever operator.watchNamespaces says. */}}
{{- define "kvstore.leaderRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "patch"]
{{- end -}}

{{/* The cluster-scoped rules: whether a stuck pod's Node is NotReady. */}}
{{- define "kvstore.clusterRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get"]
{{- end -}}

{{/* The namespaces of the cluster, as a JSON map of name to true; "{}" where no cluster is asked
(helm template, --dry-run=client: lookup returns nothing, and a real cluster always has some).
Its own template so that the chart's tests can stand in for the cluster (tests/chart). */}}
{{- define "kvstore.clusterNamespaces" -}}
{{- $found := dict -}}
{{- $list := lookup "v1" "Namespace" "" "" -}}
{{- range $ns := (get $list "items" | default list) -}}
{{- $_ := set $found $ns.metadata.name true -}}
{{- end -}}
{{- toJson $found -}}
{{- end -}}

{{/* Fail, naming it, when operator.watchNamespaces names a namespace the cluster does not have:
Helm would otherwise stop half-way with "namespaces ... not found" on the Role. The release
namespace is exempt (helm install --create-namespace makes it after rendering). */}}
{{- define "kvstore.checkNamespaces" -}}
{{- $existing := include "kvstore.clusterNamespaces" . | fromJson -}}
{{- if $existing -}}
{{- range $ns := .Values.operator.watchNamespaces -}}
{{- if and (ne $ns $.Release.Namespace) (not (hasKey $existing $ns)) -}}
{{- fail (printf "operator.watchNamespaces names the namespace %q, which does not exist: create it first (kubectl create namespace %s), then install again" $ns $ns) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
