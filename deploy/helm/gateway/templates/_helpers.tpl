{{- define "gw.fullname" -}}{{ printf "%s-%s" .Release.Name "krypton-gateway" | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "gw.selector" -}}
app.kubernetes.io/name: krypton-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "gw.labels" -}}
{{ include "gw.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{/* The gateway container: the same in the Deployment and in the sidecar snippet. */}}
{{- define "gw.container" -}}
name: krypton-gateway
image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
args:
  - gateway
  - -region={{ .Values.region }}
  - -region-name={{ .Values.regionName }}
  - -ca-cert=/etc/krypton/ca/ca.crt
  - -cert=/etc/krypton/service/tls.crt
  - -key=/etc/krypton/service/tls.key
  {{- if eq .Values.mode "deployment" }}
  - -server-cert=/etc/krypton/gateway/tls.crt
  - -server-key=/etc/krypton/gateway/tls.key
  - -listen=0.0.0.0:{{ .Values.ports.grpc }}
  {{- else }}
  - -listen=
  - -unix-socket=/run/krypton/gateway.sock
  - -unix-socket-mode=0660
  - -unix-socket-group=65532
  {{- end }}
  - -http-addr=0.0.0.0:{{ .Values.ports.http }}
  - -log-format=json
ports:
  {{- if eq .Values.mode "deployment" }}
  - {name: grpc, containerPort: {{ .Values.ports.grpc }}, protocol: TCP}
  {{- end }}
  - {name: gw-http, containerPort: {{ .Values.ports.http }}, protocol: TCP}
livenessProbe:
  httpGet: {path: /livez, port: gw-http}
readinessProbe:
  httpGet: {path: /readyz, port: gw-http}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
resources: {{- toYaml .Values.resources | nindent 2 }}
volumeMounts:
  - {name: krypton-service-tls, mountPath: /etc/krypton/service, readOnly: true}
  - {name: krypton-ca, mountPath: /etc/krypton/ca, readOnly: true}
  {{- if eq .Values.mode "deployment" }}
  - {name: krypton-gateway-tls, mountPath: /etc/krypton/gateway, readOnly: true}
  {{- else }}
  - {name: krypton-socket, mountPath: /run/krypton}
  {{- end }}
{{- end -}}
{{- define "gw.volumes" -}}
- name: krypton-service-tls
  secret: {secretName: {{ include "gw.fullname" . }}-service}
- name: krypton-ca
  configMap: {name: {{ .Values.certificates.caConfigMap }}}
{{- if eq .Values.mode "deployment" }}
- name: krypton-gateway-tls
  secret: {secretName: {{ include "gw.fullname" . }}-gateway}
{{- else }}
- name: krypton-socket
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
{{- end }}
{{- end -}}
