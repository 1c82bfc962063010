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
