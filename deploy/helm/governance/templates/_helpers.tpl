{{- define "krypton.fullname" -}}{{ printf "%s-%s" .Release.Name "krypton-governance" | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "krypton.selector" -}}
app.kubernetes.io/name: krypton-governance
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "krypton.labels" -}}
{{ include "krypton.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "krypton.check" -}}
{{- if not (has (int .Values.replicas) (list 3 5)) -}}{{ fail "replicas must be 3 or 5: a Raft cluster of another size either loses quorum sooner or gains nothing" }}{{- end -}}
{{- end -}}
