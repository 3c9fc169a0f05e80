{{- define "kubeshaper.labels" -}}
{{- with .Values.commonLabels }}{{ toYaml . }}{{ end }}
{{- end -}}
