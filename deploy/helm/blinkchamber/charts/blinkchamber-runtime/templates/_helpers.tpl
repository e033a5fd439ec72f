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

{{/* Where the config ConfigMap is mounted, and the file every subcommand reads. */}}
{{- define "bcr.configDir" -}}
/etc/blinkchamber
{{- end -}}

{{- define "bcr.configFile" -}}
{{ include "bcr.configDir" . }}/config.yaml
{{- end -}}

{{/*
Labels of a runtime pod; pass (dict "ctx" . "component" "serve").
*/}}
{{- define "bcr.podLabels" -}}
{{ include "bcr.selectorLabels" . }}
{{ include "bcr.commonLabels" .ctx }}
{{- with .ctx.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Annotations of a runtime pod; pass (dict "ctx" . "oneShot" BOOL).
The Vault agent writes each secret to /vault/secrets/NAME; the binary reads them with
valueFromFile and re-reads them when the sidecar agent rewrites the file. A one-shot pod
(the helm test) gets the files from the init agent only: a sidecar agent never exits, so
the pod would never complete.
*/}}
{{- define "bcr.podAnnotations" -}}
{{- $v := .ctx.Values -}}
checksum/config: {{ include "bcr.config" .ctx | sha256sum }}
{{- if $v.vault.enabled }}
vault.hashicorp.com/agent-inject: "true"
vault.hashicorp.com/role: {{ $v.vault.role | quote }}
vault.hashicorp.com/agent-init-first: {{ $v.vault.initFirst | quote }}
vault.hashicorp.com/agent-pre-populate-only: {{ or .oneShot (not $v.vault.sidecar) | quote }}
vault.hashicorp.com/agent-run-as-user: {{ $v.podSecurityContext.runAsUser | default 65532 | quote }}
{{- range $name, $s := $v.vault.secrets }}
vault.hashicorp.com/agent-inject-secret-{{ $name }}: {{ $s.path | quote }}
vault.hashicorp.com/agent-inject-template-{{ $name }}: |
  {{ printf "{{- with secret %q -}}{{ .Data.data.%s }}{{- end }}" $s.path $s.key }}
{{- end }}
{{- end }}
{{- with $v.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Pod spec fields every runtime pod shares: identity (the service account the Vault role is
bound to), pull secrets, pod security context and placement on nodes. Pass the root context.
*/}}
{{- define "bcr.podSpecCommon" -}}
serviceAccountName: {{ include "bcr.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.vault.enabled }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container fields every runtime container shares: image, env, security context. */}}
{{- define "bcr.containerCommon" -}}
image: {{ include "bcr.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- with .Values.env }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{/* Volume mounts of a container running the binary: the config, and /tmp writable. */}}
{{- define "bcr.volumeMounts" -}}
- {name: config, mountPath: {{ include "bcr.configDir" . }}, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{- end -}}

{{/* Volumes behind bcr.volumeMounts. */}}
{{- define "bcr.volumes" -}}
- name: config
  configMap:
    name: {{ include "bcr.fullname" . }}-config
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- end -}}

{{/*
Pod template shared by serve and worker; pass (dict "ctx" . "component" "serve" "args" (list ...) "resources" ...).
*/}}
{{- define "bcr.podTemplate" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
metadata:
  labels:
    {{- include "bcr.podLabels" . | nindent 4 }}
  annotations:
    {{- include "bcr.podAnnotations" . | nindent 4 }}
spec:
  {{- include "bcr.podSpecCommon" $ctx | nindent 2 }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- if $v.configCheck.enabled }}
  initContainers:
    - name: config-check
      {{- include "bcr.containerCommon" $ctx | nindent 6 }}
      args: ["config", "check", {{ include "bcr.configFile" $ctx | quote }}]
      resources:
        requests: {cpu: 10m, memory: 16Mi}
        limits: {cpu: 200m, memory: 64Mi}
      volumeMounts:
        - {name: config, mountPath: {{ include "bcr.configDir" $ctx }}, readOnly: true}
  {{- end }}
  containers:
    - name: {{ .component }}
      {{- include "bcr.containerCommon" $ctx | nindent 6 }}
      args:
        {{- toYaml .args | nindent 8 }}
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
      volumeMounts:
        {{- include "bcr.volumeMounts" $ctx | nindent 8 }}
  volumes:
    {{- include "bcr.volumes" $ctx | nindent 4 }}
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
{{- end -}}
