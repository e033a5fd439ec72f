{{/* Chart name, truncated to the 63 characters Kubernetes allows in a label. */}}
{{- define "bcr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix. The release name alone when it already says blinkchamber. */}}
{{- define "bcr.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "blinkchamber" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-blinkchamber" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels shared by every object of the runtime. */}}
{{- define "bcr.labels" -}}
app.kubernetes.io/name: {{ include "bcr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "bcr.commonLabels" . }}
{{- end -}}

{{/* The labels of bcr.labels that are not selector labels. */}}
{{- define "bcr.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: blinkchamber-platform
{{- end -}}

{{/* Selector labels of one component ("serve" or "worker"); pass (dict "ctx" . "component" "serve"). */}}
{{- define "bcr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bcr.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bcr.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bcr.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bcr.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The config file: `config` with `extraConfig` merged over it. */}}
{{- define "bcr.config" -}}
{{- toYaml (mergeOverwrite (deepCopy .Values.config) (deepCopy .Values.extraConfig)) -}}
{{- end -}}

{{/*
Pod template shared by serve and worker; pass (dict "ctx" . "component" "serve" "args" (list ...) "resources" ...).
The Vault agent writes each secret to /vault/secrets/NAME; the binary reads them with
valueFromFile and re-reads them when the sidecar agent rewrites the file.
*/}}
{{- define "bcr.podTemplate" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
metadata:
  labels:
    {{- include "bcr.selectorLabels" . | nindent 4 }}
    {{- include "bcr.commonLabels" $ctx | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "bcr.config" $ctx | sha256sum }}
    {{- if $v.vault.enabled }}
    vault.hashicorp.com/agent-inject: "true"
    vault.hashicorp.com/role: {{ $v.vault.role | quote }}
    vault.hashicorp.com/agent-init-first: {{ $v.vault.initFirst | quote }}
    vault.hashicorp.com/agent-pre-populate-only: {{ not $v.vault.sidecar | quote }}
    vault.hashicorp.com/agent-run-as-user: {{ $v.podSecurityContext.runAsUser | default 65532 | quote }}
    {{- range $name, $s := $v.vault.secrets }}
    vault.hashicorp.com/agent-inject-secret-{{ $name }}: {{ $s.path | quote }}
    vault.hashicorp.com/agent-inject-template-{{ $name }}: |
      {{ printf "{{- with secret %q -}}{{ .Data.data.%s }}{{- end }}" $s.path $s.key }}
    {{- end }}
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "bcr.serviceAccountName" $ctx }}
  automountServiceAccountToken: {{ $v.vault.enabled }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- if $v.configCheck.enabled }}
  initContainers:
    - name: config-check
      image: {{ include "bcr.image" $ctx }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args: ["config", "check", "/etc/blinkchamber/config.yaml"]
      {{- with $v.env }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      resources:
        requests: {cpu: 10m, memory: 16Mi}
        limits: {cpu: 200m, memory: 64Mi}
      volumeMounts:
        - {name: config, mountPath: /etc/blinkchamber, readOnly: true}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "bcr.image" $ctx }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      {{- with $v.env }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        {{- if eq .component "serve" }}
        - {name: http, containerPort: {{ $v.ports.http }}, protocol: TCP}
        {{- end }}
        - {name: metrics, containerPort: {{ $v.ports.metrics }}, protocol: TCP}
      {{- if eq .component "serve" }}
      livenessProbe:
        {{- toYaml $v.livenessProbe | nindent 8 }}
      readinessProbe:
        {{- toYaml $v.readinessProbe | nindent 8 }}
      {{- else }}
      livenessProbe:
        {{- toYaml (set (deepCopy $v.livenessProbe) "httpGet" (dict "path" "/metrics" "port" "metrics")) | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        - {name: config, mountPath: /etc/blinkchamber, readOnly: true}
        - {name: tmp, mountPath: /tmp}
  volumes:
    - name: config
      configMap:
        name: {{ include "bcr.fullname" $ctx }}-config
    - name: tmp
      emptyDir: {sizeLimit: 64Mi}
  affinity:
    podAntiAffinity:
      {{- if eq $v.podAntiAffinity "hard" }}
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "bcr.selectorLabels" . | nindent 14 }}
      {{- else }}
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "bcr.selectorLabels" . | nindent 16 }}
      {{- end }}
  {{- if $v.topologySpread.enabled }}
  topologySpreadConstraints:
    - maxSkew: {{ $v.topologySpread.maxSkew }}
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "bcr.selectorLabels" . | nindent 10 }}
  {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
