{{- define "statused-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "statused-operator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "statused-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "statused-operator.serviceAccountName" -}}
{{- default (include "statused-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/*
Checks of the checkov policy linter this chart deliberately does not follow, each with its
reason (checkov reads them from these annotations).
*/}}
{{- define "statused-operator.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_11=No CPU limit by default - CFS throttling would stall the receiver in a burst; set resources.limits.cpu if your policy needs one
checkov.io/skip2: CKV_K8S_38=The operator talks to the API server with its ServiceAccount token
{{- if not .Values.image.digest }}
checkov.io/skip3: CKV_K8S_43=Set image.digest to pin the image; a tag is the default so that an install needs no digest
checkov.io/skip4: CKV_K8S_15=IfNotPresent with versioned tags or a digest; set image.pullPolicy to Always for mutable tags
{{- end }}
{{- if not .Values.networkPolicy.enabled }}
checkov.io/skip5: CKV2_K8S_6=networkPolicy.enabled is off by default - the right egress depends on where the API server and the targets live
{{- end }}
{{- end }}
