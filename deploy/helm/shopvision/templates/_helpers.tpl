{{- define "shopvision.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shopvision.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "shopvision.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "shopvision.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shopvision.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shopvision.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shopvision.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "shopvision.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: inference-server
app.kubernetes.io/part-of: shopvision
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shopvision.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shopvision.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shopvision.modelRepository" -}}
{{- if eq .Values.modelRepository.source "objectStore" -}}
{{- required "modelRepository.objectStore.url is required when source is objectStore" .Values.modelRepository.objectStore.url -}}
{{- else if eq .Values.modelRepository.source "pvc" -}}
/mnt/model-repository
{{- else if eq .Values.modelRepository.source "image" -}}
/models
{{- else -}}
{{- fail "modelRepository.source must be image, pvc or objectStore" -}}
{{- end -}}
{{- end -}}

{{- define "shopvision.api.fullname" -}}
{{- printf "%s-api" (include "shopvision.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Another app.kubernetes.io/name, so that Triton's Service never selects the search service's pods. */}}
{{- define "shopvision.api.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-api" (include "shopvision.name" .) }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shopvision.api.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "shopvision.api.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: search-api
app.kubernetes.io/part-of: shopvision
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The embedded catalog (FAISS + SQLite on a volume) has one writer: one pod, replaced, never two at once. */}}
{{- define "shopvision.api.embeddedCatalog" -}}
{{- if not .Values.api.catalog.milvusUri -}}
{{- if or (gt (int .Values.api.replicaCount) 1) .Values.api.autoscaling.enabled -}}
{{- fail "api: several replicas would corrupt the embedded catalog (one writer): set api.catalog.milvusUri to share a Milvus catalog, or keep api.replicaCount 1 and api.autoscaling.enabled false" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* The feed sync's own app.kubernetes.io/name: neither Triton's Service nor the search service's selects its pods. */}}
{{- define "shopvision.feedSync.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ printf "%s-feed-sync" (include "shopvision.name" .) }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: feed-sync
app.kubernetes.io/part-of: shopvision
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
