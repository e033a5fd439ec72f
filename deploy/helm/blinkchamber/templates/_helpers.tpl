{{/* Labels shared by the platform's own objects. */}}
{{- define "platform.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ .Values.platform.partOf }}
{{- end -}}

{{/* Namespace of PostgreSQL and Redis. */}}
{{- define "platform.dbNamespace" -}}
{{- .Values.platform.databaseNamespace -}}
{{- end -}}

{{/* Name of the Vault policy of an application. */}}
{{- define "platform.policyName" -}}
{{- printf "%s-policy" . -}}
{{- end -}}
