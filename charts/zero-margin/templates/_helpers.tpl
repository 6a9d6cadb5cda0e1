{{/* Names and labels shared by every template. */}}

{{- define "zm.name" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "zm.labels" -}}
app.kubernetes.io/part-of: zero-margin-mlops
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "mlflow") */}}
{{- define "zm.selector" -}}
app.kubernetes.io/part-of: zero-margin-mlops
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository@digest when a digest is set, repository:tag otherwise. */}}
{{- define "zm.image" -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end -}}

{{- define "zm.trackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{ ternary "https" "http" .Values.mlflow.tls.enabled }}://{{ include "zm.name" . }}-mlflow.{{ .Release.Namespace }}.svc:5000
{{- else -}}
{{ .Values.mlflow.externalTrackingUri }}
{{- end -}}
{{- end -}}

{{- define "zm.pushgatewayUrl" -}}
{{- if .Values.pushgateway.enabled -}}
http://{{ include "zm.name" . }}-pushgateway.{{ .Release.Namespace }}.svc:9091
{{- else -}}
{{ .Values.pushgateway.externalUrl }}
{{- end -}}
{{- end -}}

{{/* Pod-level security: Pod Security Standards "restricted". */}}
{{- define "zm.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security: Pod Security Standards "restricted" plus a read-only root filesystem. */}}
{{- define "zm.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A secret as an environment variable, by reference: (dict "root" $ "env" "ZM_X" "key" "k") */}}
{{- define "zm.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.secrets.name }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* Pod annotation that changes with the settings, so `helm upgrade` with new settings rolls the pods. */}}
{{- define "zm.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/* Topology spread of one component: (dict "root" $ "replicas" N "selector" (dict ...) "zoneWhen" "ScheduleAnyway").
Zones are best effort; with two or more replicas no two share a node (one node's loss leaves one serving). */}}
{{- define "zm.spread" -}}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: {{ .zoneWhen | default "ScheduleAnyway" }}
  labelSelector:
    matchLabels:
      {{- toYaml .selector | nindent 6 }}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: {{ if ge (int .replicas) 2 }}DoNotSchedule{{ else }}ScheduleAnyway{{ end }}
  labelSelector:
    matchLabels:
      {{- toYaml .selector | nindent 6 }}
{{- end -}}

{{/* Writable scratch space for a read-only root filesystem. */}}
{{- define "zm.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: state
  emptyDir:
    sizeLimit: 2Gi
{{- end -}}

{{- define "zm.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: state
  mountPath: /var/lib/zm
{{- end -}}

{{/* checkov skips shared by our workloads, each with its reason. */}}
{{- define "zm.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_43=Images are pinned by release tag by default; set images.*.digest to pin by digest (the values schema refuses latest)
checkov.io/skip2: CKV_K8S_15=Pinned images with IfNotPresent let pods restart during a registry outage; pullPolicy is a value
checkov.io/skip3: CKV_K8S_35=Settings are read from ZM_* environment variables (pydantic-settings); secret values come only from secretKeyRef, never inline
{{- end -}}

{{/* Where pods find the CA that signed MLflow's certificate (mlflow.tls): ca.crt of its cert-manager Secret. */}}
{{- define "zm.mlflowCaMount" -}}
- name: mlflow-ca
  mountPath: /etc/zero-margin/mlflow-ca
  readOnly: true
{{- end -}}
{{- define "zm.mlflowCaVolume" -}}
- name: mlflow-ca
  secret:
    secretName: {{ include "zm.name" . }}-mlflow-tls
    items: [{key: ca.crt, path: ca.crt}]
    defaultMode: 0444
{{- end -}}


{{/* A cert-manager Certificate for a Service of ours: Secret <name>-tls, names <name>, <name>.<ns>.svc and
<name>.<ns>.svc.cluster.local plus extra; dict: root, name, component, tls (issuerRef, duration, renewBefore),
extra (optional list of more DNS names). */}}
{{- define "zm.certificate" -}}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ .name }}-tls
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "zm.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  secretName: {{ .name }}-tls
  issuerRef:
    name: {{ .tls.issuerRef.name }}
    kind: {{ .tls.issuerRef.kind }}
    group: cert-manager.io
  duration: {{ .tls.duration }}
  renewBefore: {{ .tls.renewBefore }}
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
  usages: ["server auth", "digital signature"]
  dnsNames:
    - {{ .name }}
    - {{ .name }}.{{ .root.Release.Namespace }}.svc
    - {{ .name }}.{{ .root.Release.Namespace }}.svc.cluster.local
    {{- range .extra }}
    - {{ . }}
    {{- end }}
{{- end -}}

{{/* The TLS Secret <name>-tls as a volume and its mount at /etc/zero-margin/tls (tls.crt, tls.key). */}}
{{- define "zm.tlsMount" -}}
- name: tls
  mountPath: /etc/zero-margin/tls
  readOnly: true
{{- end -}}
{{- define "zm.tlsVolume" -}}
- name: tls
  secret:
    secretName: {{ . }}-tls
    defaultMode: 0400
{{- end -}}
