{{/* Names, labels, connection strings and the security defaults every pod shares. */}}

{{- define "rtml.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rtml.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "rtml.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "rtml.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rtml.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels: stable across upgrades (no chart version), so kustomize renders the same objects. */}}
{{- define "rtml.labels" -}}
app.kubernetes.io/name: {{ include "rtml.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: rtml
app.kubernetes.io/component: {{ .component }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "rtml.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtml.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rtml.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 65532 }}
runAsGroup: {{ .uid | default 65532 }}
fsGroup: {{ .uid | default 65532 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "rtml.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "rtml.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled -}}
{{- $fn := include "rtml.fullname" . -}}
{{- printf "%s-kafka.%s.svc.cluster.local:9092" $fn .Release.Namespace -}}
{{- else -}}
{{- required "kafka.external.bootstrap is required when kafka.enabled is false" .Values.kafka.external.bootstrap -}}
{{- end -}}
{{- end -}}

{{- define "rtml.redisAddress" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s-redis.%s.svc.cluster.local:6379" (include "rtml.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "redis.external.address is required when redis.enabled is false" .Values.redis.external.address -}}
{{- end -}}
{{- end -}}

{{- define "rtml.postgresAddress" -}}
{{- if .Values.postgresql.enabled -}}
{{- printf "%s-postgresql.%s.svc.cluster.local:5432" (include "rtml.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "postgresql.external.address is required when postgresql.enabled is false" .Values.postgresql.external.address -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by every rtml container: stores and Kafka client settings; secrets by reference only. */}}
{{- define "rtml.commonEnv" -}}
- name: RTML_HOME
  value: /tmp/rtml
- name: RTML_KAFKA_BOOTSTRAP
  value: {{ include "rtml.kafkaBootstrap" . | quote }}
- name: RTML_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.security.protocol | quote }}
{{- if hasPrefix "SASL" .Values.kafka.security.protocol }}
- name: RTML_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.security.sasl.mechanism | quote }}
- name: RTML_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.security.sasl.existingSecret is required for SASL" .Values.kafka.security.sasl.existingSecret }}
      key: {{ .Values.kafka.security.sasl.usernameKey }}
- name: RTML_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.security.sasl.existingSecret }}
      key: {{ .Values.kafka.security.sasl.passwordKey }}
{{- end }}
{{- if .Values.kafka.security.tls.existingSecret }}
- name: RTML_KAFKA_SSL_CAFILE
  value: /etc/rtml/kafka-tls/ca.crt
{{- end }}
- name: RTML_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgresql.existingSecret }}
      key: password
- name: RTML_FEAST_REGISTRY_URL
  value: {{ printf "postgresql+psycopg://%s:$(RTML_POSTGRES_PASSWORD)@%s/%s" .Values.postgresql.username (include "rtml.postgresAddress" .) .Values.postgresql.database | quote }}
{{- if .Values.redis.existingSecret }}
- name: RTML_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: password
- name: RTML_REDIS_CONNECTION
  value: {{ printf "%s,password=$(RTML_REDIS_PASSWORD)" (include "rtml.redisAddress" .) | quote }}
{{- else }}
- name: RTML_REDIS_CONNECTION
  value: {{ include "rtml.redisAddress" . | quote }}
{{- end }}
{{- end -}}

{{/* Volumes every rtml pod needs with a read-only root filesystem. */}}
{{- define "rtml.commonVolumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.kafka.security.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.security.tls.existingSecret }}
{{- end }}
{{- end -}}

{{- define "rtml.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.security.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/rtml/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "rtml.topics" -}}
{{- $t := .Values.kafka.topics -}}
{{- $base := list $t.transactions $t.fraudLabels $t.predictions -}}
{{- $all := list -}}
{{- range $base }}{{ $all = append $all . }}{{ $all = append $all (printf "%s%s" . $t.dlqSuffix) }}{{ end -}}
{{- /* The engine's repartition topic (streaming/topology.py: rtml-<source>-by-<join key>): terminal windows read
       transactions re-keyed by terminal. Created here with the other topics, co-partitioned with fraud-labels. */ -}}
{{- $all = append $all "rtml-transactions-by-terminal_id" -}}
{{- join " " $all -}}
{{- end -}}
