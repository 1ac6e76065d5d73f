{{/* The release's full name, at most 63 characters. */}}
{{- define "a2a.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "a2a.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "a2a.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: a2a
{{- end -}}

{{- define "a2a.selectorLabels" -}}
app.kubernetes.io/name: a2a-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "a2a.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "a2a.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "a2a.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- /* A map as the OpenTelemetry variables write lists: k=v,k2=v2, values URL-encoded. */ -}}
{{- define "a2a.otelPairs" -}}
{{- $pairs := list -}}
{{- range $k, $v := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $k (urlquery $v | replace "+" "%20")) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
