{{- define "nodegate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nodegate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nodegate.labels" -}}
app.kubernetes.io/name: {{ include "nodegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "nodegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nodegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nodegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nodegate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The settings the chart owns, merged over .Values.config (the chart's win). */}}
{{- define "nodegate.config" -}}
{{- $admin := dict "address" (printf "127.0.0.1:%d" (int .Values.ports.admin)) -}}
{{- if .Values.adminToken.existingSecret -}}
{{- $admin = dict "address" (printf "0.0.0.0:%d" (int .Values.ports.admin)) "token" "${NODEGATE_ADMIN_TOKEN}" -}}
{{- end -}}
{{- $owned := dict
  "listeners" (dict
    "transparent" (printf "%s:%d" .Values.nodeLocalAddress (int .Values.ports.transparent))
    "explicit" (printf "%s:%d" .Values.nodeLocalAddress (int .Values.ports.explicit))
    "reuse_port" true)
  "admin" $admin
  "kubernetes" (dict
    "enabled" true
    "node_address" .Values.nodeLocalAddress
    "node_interface" .Values.nodeInterface
    "enroll" (dict "label" .Values.enroll.label "value" .Values.enroll.value "opt_out" .Values.enroll.optOutAnnotation))
  "intercept" (dict
    "enabled" true
    "mode" "ebpf"
    "cgroup_root" .Values.hostPaths.cgroup
    "pin_path" (printf "%s/nodegate" .Values.hostPaths.bpf)
    "keep_pinned" .Values.keepProgramsOnUpgrade)
-}}
{{- if .Values.tls.caSecret -}}
{{- $_ := set $owned "tls" (dict "ca" (dict "cert" "/etc/nodegate/ca/tls.crt" "key" "/etc/nodegate/ca/tls.key")) -}}
{{- end -}}
{{- $cfg := mustMergeOverwrite (deepCopy .Values.config) $owned -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* True (non-empty) when updates surge: the new pod runs beside the old one on a node. */}}
{{- define "nodegate.surge" -}}
{{- $u := .Values.updateStrategy | default dict -}}
{{- $r := $u.rollingUpdate | default dict -}}
{{- if and (eq ($u.type | default "RollingUpdate") "RollingUpdate") $r.maxSurge (ne (toString $r.maxSurge) "0") (ne (toString $r.maxSurge) "0%") -}}
true
{{- end -}}
{{- end }}
