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

{{- define "lipsync.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "lipsync.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
