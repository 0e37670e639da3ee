{{/* The namespace of the models (AIModels and their workers). */}}
{{- define "uplion.modelsNamespace" -}}
{{- default .Release.Namespace .Values.models.namespace -}}
{{- end -}}

{{/* An image of uplion: {registry}/uplion/{name}:{tag or appVersion}. Call with (list $ "platform"). */}}
{{- define "uplion.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s/uplion/%s:%s" $root.Values.image.registry (index . 1) (default $root.Chart.AppVersion $root.Values.image.tag) -}}
{{- end -}}

{{- define "uplion.labels" -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/part-of: uplion
app.kubernetes.io/version: {{ (index . 0).Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ (index . 0).Release.Service }}
helm.sh/chart: {{ printf "%s-%s" (index . 0).Chart.Name (index . 0).Chart.Version }}
{{- end -}}

{{- define "uplion.selector" -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
{{- end -}}

{{/* The Secret name holding a value: the named one, or (ratelimitRedisURL) redisURL's. */}}
{{- define "uplion.secretRef" -}}
{{- $root := index . 0 -}}
{{- $ref := index $root.Values.secrets (index . 1) -}}
{{- if and (eq (index . 1) "ratelimitRedisURL") (not $ref.name) -}}
{{- $ref = $root.Values.secrets.redisURL -}}
{{- end -}}
name: {{ required (printf "secrets.%s.name is required" (index . 1)) $ref.name }}
key: {{ $ref.key }}
{{- end -}}

{{/* An env entry read from one of the referenced Secrets: (list $ "UPLION_DATABASE_URL" "databaseURL"). */}}
{{- define "uplion.secretEnv" -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      {{- include "uplion.secretRef" (list (index . 0) (index . 2)) | nindent 6 }}
{{- end -}}

{{/* A Redis client's settings: (root, secrets key): the URL from its Secret, and cluster mode. */}}
{{- define "uplion.redisEnv" -}}
{{ include "uplion.secretEnv" (list (index . 0) "UPLION_REDIS_URL" (index . 1)) }}
- {name: UPLION_REDIS_CLUSTER, value: {{ (index . 0).Values.redis.cluster | toString | quote }}}
{{- end -}}

{{/* The Pulsar settings of one Pulsar client: (root, component). Its own token
(secrets.pulsarTokens.<component>: one Pulsar role each, docs/pulsar-auth.md) wins over the shared
secrets.pulsarToken. */}}
{{- define "uplion.pulsarEnv" -}}
{{- $root := index . 0 -}}
{{- $own := index ($root.Values.secrets.pulsarTokens | default dict) (index . 1) | default dict -}}
- {name: UPLION_PULSAR_URL, value: {{ $root.Values.pulsar.url | quote }}}
- {name: UPLION_PULSAR_TENANT, value: {{ $root.Values.pulsar.tenant | quote }}}
- {name: UPLION_PULSAR_NAMESPACE, value: {{ $root.Values.pulsar.namespace | quote }}}
{{- if $root.Values.pulsar.replyNamespace }}
- {name: UPLION_PULSAR_REPLY_NAMESPACE, value: {{ $root.Values.pulsar.replyNamespace | quote }}}
{{- end }}
{{- if $own.name }}
- name: UPLION_PULSAR_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $own.name }}
      key: {{ $own.key | default "token" }}
{{- else if $root.Values.secrets.pulsarToken.name }}
{{ include "uplion.secretEnv" (list $root "UPLION_PULSAR_TOKEN" "pulsarToken") }}
{{- end }}
{{- end -}}

{{/* A component's extra settings (a map) as env entries. */}}
{{- define "uplion.extraEnv" -}}
{{- range $k, $v := . }}
- {name: {{ $k }}, value: {{ $v | toString | quote }}}
{{- end }}
{{- end -}}

{{/*
A ServiceAccount, Deployment, PodDisruptionBudget and (with ports) a Service for one component.
Call with a dict:
  root: $, name: uplion-<x>, image: platform|edge|ratelimit, command: [..] (optional),
  values: the component's values, ports: list of {name, port} (optional),
  grpcProbe: true for grpc.health.v1 probes on the first port, httpProbe: path on the metrics port,
  tcpProbe: true for TCP probes on the first port, kubeAPI: true to mount the API token,
  env: a YAML string of env entries, volumes / volumeMounts: YAML strings (optional),
  annotations: pod annotations map (optional)
*/}}
{{- define "uplion.component" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $ports := default (list) .ports -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "uplion.labels" (list $root .name) | nindent 4 }}
automountServiceAccountToken: {{ .kubeAPI | default false }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "uplion.labels" (list $root .name) | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ default 1 $v.replicas }}
  {{- end }}
  {{- if .recreate }}
  strategy: {type: Recreate}
  {{- end }}
  selector:
    matchLabels:
      {{- include "uplion.selector" (list $root .name) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "uplion.labels" (list $root .name) | nindent 8 }}
      {{- with .annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ .name }}
      automountServiceAccountToken: {{ .kubeAPI | default false }}
      {{- with $root.Values.image.pullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ trimPrefix "uplion-" .name }}
          image: {{ include "uplion.image" (list $root .image) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          {{- with .command }}
          command: {{ toJson . }}
          {{- end }}
          {{- with .args }}
          args: {{ toJson . }}
          {{- end }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          ports:
            {{- range $ports }}
            - {name: {{ .name }}, containerPort: {{ .port }}, protocol: TCP}
            {{- end }}
            {{- if not .noMetrics }}
            - {name: metrics, containerPort: {{ $root.Values.metrics.port }}, protocol: TCP}
            {{- end }}
          {{- if or (not .noMetrics) .env $v.env }}
          env:
            {{- if not .noMetrics }}
            - {name: UPLION_METRICS_PORT, value: {{ $root.Values.metrics.port | quote }}}
            {{- end }}
            {{- with $root.Values.tracing.otlpEndpoint }}
            - {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ . | quote }}}
            {{- end }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- include "uplion.extraEnv" $v.env | nindent 12 }}
          {{- end }}
          {{- if .grpcProbe }}
          readinessProbe:
            grpc: {port: {{ (first $ports).port }}}
            periodSeconds: 5
            failureThreshold: 3
          livenessProbe:
            grpc: {port: {{ (first $ports).port }}}
            initialDelaySeconds: 10
            periodSeconds: 10
            failureThreshold: 6
          {{- else if .httpProbe }}
          readinessProbe:
            httpGet: {path: {{ .httpProbe }}, port: metrics}
            periodSeconds: 10
          livenessProbe:
            httpGet: {path: {{ .httpProbe }}, port: metrics}
            initialDelaySeconds: 15
            periodSeconds: 20
            failureThreshold: 6
          {{- else if .tcpProbe }}
          readinessProbe:
            tcpSocket: {port: {{ (first $ports).port }}}
            periodSeconds: 5
          livenessProbe:
            tcpSocket: {port: {{ (first $ports).port }}}
            initialDelaySeconds: 10
            periodSeconds: 10
            failureThreshold: 6
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            {{- with .volumeMounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 64Mi}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
{{- if $v.pdb }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "uplion.labels" (list $root .name) | nindent 4 }}
spec:
  {{- toYaml $v.pdb | nindent 2 }}
  selector:
    matchLabels:
      {{- include "uplion.selector" (list $root .name) | nindent 6 }}
{{- end }}
{{- if $ports }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "uplion.labels" (list $root .name) | nindent 4 }}
  {{- with .serviceAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ default "ClusterIP" .serviceType }}
  selector:
    {{- include "uplion.selector" (list $root .name) | nindent 4 }}
  ports:
    {{- range $ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
      {{- with .appProtocol }}
      appProtocol: {{ . }}
      {{- end }}
    {{- end }}
    {{- if not .noMetrics }}
    - {name: metrics, port: {{ $root.Values.metrics.port }}, targetPort: metrics}
    {{- end }}
{{- end }}
{{- end -}}
