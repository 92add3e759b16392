{{/* Pieces of the InferenceService: one container per component, rtml's image, V2 protocol. */}}

{{- define "rtml.serving.ports" -}}
{{- if eq .Values.serving.deploymentMode "Knative" }}
{{- /* Knative routes one port per container; gRPC clients use the Standard-mode port or the transformer. */}}
- {name: http1, containerPort: 8080, protocol: TCP}
{{- else }}
- {name: http, containerPort: 8080, protocol: TCP}
- {name: grpc, containerPort: 8081, protocol: TCP}
{{- end }}
{{- end -}}

{{/* A predictor component body (no autoscaling fields): .root, .name, .version, .storageUri */}}
{{- define "rtml.serving.predictorBody" -}}
{{- $v := .root.Values -}}
{{- if $v.serving.serviceAccountName }}
serviceAccountName: {{ $v.serving.serviceAccountName }}
{{- end }}
securityContext: {{- include "rtml.podSecurityContext" dict | nindent 2 }}
containers:
  - name: kserve-container
    image: {{ include "rtml.image" .root }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    securityContext: {{- include "rtml.containerSecurityContext" . | nindent 6 }}
    command: [python, -m, inference]
    args: [--role, predictor]
    env:
      - {name: RTML_HOME, value: /tmp/rtml}
      - {name: RTML_MODEL_NAME, value: {{ $v.serving.modelName | quote }}}
      - {name: RTML_HTTP_PORT, value: "8080"}
      - {name: RTML_GRPC_PORT, value: "8081"}
      # KServe's storage initializer downloads STORAGE_URI into /mnt/models before the container starts.
      - {name: STORAGE_URI, value: {{ .storageUri | quote }}}
      - {name: RTML_STORAGE_URI, value: /mnt/models}
    ports: {{- include "rtml.serving.ports" .root | nindent 6 }}
    resources: {{- toYaml $v.serving.predictor.resources | nindent 6 }}
    volumeMounts:
      - {name: tmp, mountPath: /tmp}
volumes:
  - {name: tmp, emptyDir: {}}
{{- end -}}

{{- define "rtml.serving.autoscaling" -}}
minReplicas: {{ .minReplicas }}
maxReplicas: {{ .maxReplicas }}
scaleMetric: {{ .scaleMetric }}
scaleTarget: {{ .scaleTarget }}
{{- end -}}
