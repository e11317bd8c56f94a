{{- define "toolmesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "toolmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The gateway pods (the Service, the PDB and the Deployment select them; demo tools and the migration do not match). */ -}}
{{- define "toolmesh.gatewaySelector" -}}
{{ include "toolmesh.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "toolmesh.labels" -}}
{{ include "toolmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "toolmesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- /* The most gateway processes that may share the limits: each one's fallback share while Redis is down. */ -}}
{{- define "toolmesh.replicas" -}}
{{- if .Values.autoscaling.enabled -}}{{ .Values.autoscaling.maxReplicas }}{{- else -}}{{ .Values.replicaCount }}{{- end -}}
{{- end -}}

{{- define "toolmesh.config" -}}
{{ toYaml .Values.config }}
{{- end -}}

{{- /* Environment of every toolmesh container: the secrets the config file references. */ -}}
{{- define "toolmesh.env" -}}
- name: TOOLMESH_SESSION_SECRET
  valueFrom: {secretKeyRef: {name: {{ .Values.secret.name }}, key: {{ .Values.secret.keys.sessionSecret }}}}
- name: TOOLMESH_LLM_API_KEY
  valueFrom: {secretKeyRef: {name: {{ .Values.secret.name }}, key: {{ .Values.secret.keys.llmApiKey }}}}
- name: TOOLMESH_STATE_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.secret.name }}, key: {{ .Values.secret.keys.stateUrl }}}}
- name: TOOLMESH_STORE_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.secret.name }}, key: {{ .Values.secret.keys.storeUrl }}}}
- name: TOOLMESH_REPLICAS
  value: {{ include "toolmesh.replicas" . | quote }}
- name: TOOLMESH_TOOLS_HOST
  value: {{ include "toolmesh.fullname" . }}-tools
- name: TOOLMESH_HOME
  value: /var/lib/toolmesh
{{- end -}}
