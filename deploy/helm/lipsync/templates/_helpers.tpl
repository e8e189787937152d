{{- define "lipsync.fullname" -}}
{{- printf "%s-lipsync" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lipsync.labels" -}}
app.kubernetes.io/name: lipsync
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lipsync.selector" -}}
app.kubernetes.io/name: lipsync
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The worker pods reach every Triton pod through the headless Service (client-side round robin). */}}
{{- define "lipsync.tritonUrl" -}}
dns://{{ include "lipsync.fullname" . }}-triton-headless:8001
{{- end -}}

{{- define "lipsync.appEnv" -}}
- name: LIPSYNC_TRITON_URLS
  value: {{ include "lipsync.tritonUrl" . | quote }}
- name: LIPSYNC_DATA_DIR
  value: /data
{{- range $name, $value := .Values.settings }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "lipsync.appEnvFrom" -}}
- secretRef:
    name: {{ .Values.secrets.name }}
{{- end -}}

{{/* Pod Security "restricted": non-root, no privilege escalation, no capabilities, RuntimeDefault
seccomp. The uid is the image's own user (10001 in ours, 1000 = triton-server in NVIDIA's). */}}
{{- define "lipsync.podSecurity" -}}
{{- $uid := .uid | default 10001 }}
runAsNonRoot: true
runAsUser: {{ $uid }}
runAsGroup: {{ $uid }}
fsGroup: {{ $uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "lipsync.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "lipsync.dnsEgress" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}

{{/* Queued + running jobs. Every API replica reports the same totals (from the database): one
replica's sum, not their sum. */}}
{{- define "lipsync.activeJobsQuery" -}}
max(sum by (pod) (lipsync_jobs{status=~"queued|running", namespace="{{ .Release.Namespace }}"})) or vector(0)
{{- end -}}
