{{/*
Names and labels. The release's objects are named <fullname>-<model>-...;
fullname is the release name, or <release>-strata when the release name does
not already say strata.
*/}}
{{- define "strata.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Objects of one model: (dict "root" $ "model" $model). */}}
{{- define "strata.modelFullname" -}}
{{- printf "%s-%s" (include "strata.fullname" .root) .model.name | trunc 45 | trimSuffix "-" -}}
{{- end -}}

{{- define "strata.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "strata.labels" -}}
{{ include "strata.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The image of a container: (dict "root" $ "kind" "cpu"|"cuda"). One tag everywhere. */}}
{{- define "strata.image" -}}
{{- $images := .root.Values.images -}}
{{- $repository := required (printf "images.%s.repository is required" .kind) (index $images .kind).repository -}}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion $images.tag) -}}
{{- end -}}

{{/* Ranks per pod of a model: its GPUs per pod, or 1 on CPU pods. */}}
{{- define "strata.ranksPerPod" -}}
{{- if gt (int .gpusPerPod) 0 }}{{ int .gpusPerPod }}{{ else }}1{{ end -}}
{{- end -}}

{{/* Pods per replica of a model. */}}
{{- define "strata.podsPerReplica" -}}
{{- div (mul (int .tp) (int .pp)) (int (include "strata.ranksPerPod" .)) -}}
{{- end -}}

{{/*
Checks what the schema cannot express; fails the render with a message
naming the model.
*/}}
{{- define "strata.validate" -}}
{{- $names := dict -}}
{{- range $i, $model := include "strata.models" . | fromYamlArray -}}
{{- $where := printf "models[%d] (%s)" $i $model.name -}}
{{- if hasKey $names $model.name -}}
{{- fail (printf "%s: the model name %s is used twice" $where $model.name) -}}
{{- end -}}
{{- $_ := set $names $model.name true -}}
{{- $ranks := mul (int $model.tp) (int $model.pp) -}}
{{- $perPod := int (include "strata.ranksPerPod" $model) -}}
{{- if ne (mod $ranks $perPod) 0 -}}
{{- fail (printf "%s: tp %d x pp %d = %d ranks do not fill whole pods of gpusPerPod %d GPUs; make tp x pp a multiple of gpusPerPod" $where (int $model.tp) (int $model.pp) $ranks $perPod) -}}
{{- end -}}
{{- range $model.extraArgs -}}
{{- if regexMatch "^--(rank|world-size|leader-address|local-rank|listen|metrics-listen|tp|pp|ranks-per-pod|model|drain-seconds)(=|$)" . -}}
{{- fail (printf "%s: extraArgs may not set %s: the chart sets it from the model's values" $where .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with .Values.router.autoscaling -}}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) -}}
{{- fail (printf "router.autoscaling: minReplicas %d is above maxReplicas %d" (int .minReplicas) (int .maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The pod spec of a replica's leader or followers:
(dict "root" $ "model" $model "role" "leader"|"follower").
*/}}
{{- define "strata.workerPodSpec" -}}
{{- $root := .root -}}
{{- $model := .model -}}
{{- $leader := eq .role "leader" -}}
{{- $ranks := int (include "strata.ranksPerPod" $model) -}}
{{- $gpus := int $model.gpusPerPod -}}
{{- $drain := int $model.drainSeconds -}}
{{- $preStop := int $model.preStopSeconds -}}
{{- /* Followers keep running while the leader waits out its preStop and drains. */ -}}
{{- $stopWait := ternary $preStop (add $preStop $drain) $leader -}}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ add $drain $stopWait 15 }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- with $root.Values.images.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $model.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $model.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: worker
    image: {{ include "strata.image" (dict "root" $root "kind" (ternary "cuda" "cpu" (gt $gpus 0))) }}
    imagePullPolicy: {{ $root.Values.images.pullPolicy }}
    command: ["strata-launch-ranks"]
    args:
      - --ranks={{ $ranks }}
      - --grpc-port=50051
      - --metrics-port=9400
      - --
      - strata-worker
      - --model=/models/{{ $model.source.path }}
      - --tp={{ int $model.tp }}
      - --pp={{ int $model.pp }}
      - --ranks-per-pod={{ $ranks }}
      - --leader-port=29500
      - --bootstrap-timeout={{ int $model.bootstrapTimeoutSeconds }}
      - --drain-seconds={{ $drain }}
      - --threads={{ int $model.threads }}
      - --log-format=json
      {{- range $model.extraArgs }}
      - {{ . | quote }}
      {{- end }}
    env:
      - name: NCCL_SOCKET_IFNAME
        value: {{ $model.networkInterface | quote }}
      - name: GLOO_SOCKET_IFNAME
        value: {{ $model.networkInterface | quote }}
    ports:
      {{- if $leader }}
      - name: grpc
        containerPort: 50051
        protocol: TCP
      {{- end }}
      - name: metrics
        containerPort: 9400
        protocol: TCP
      {{- range $i := untilStep 1 $ranks 1 }}
      - name: metrics-r{{ $i }}
        containerPort: {{ add 9400 $i }}
        protocol: TCP
      {{- end }}
      {{- if $leader }}
      - name: bootstrap
        containerPort: 29500
        protocol: TCP
      {{- end }}
    {{- if $leader }}
    {{- with $model.probes }}
    startupProbe:
      grpc:
        port: 50051
        service: strata.v1.Inference
      {{- toYaml .startup | nindent 6 }}
    readinessProbe:
      grpc:
        port: 50051
        service: strata.v1.Inference
      {{- toYaml .readiness | nindent 6 }}
    livenessProbe:
      grpc:
        port: 50051
      {{- toYaml .liveness | nindent 6 }}
    {{- end }}
    {{- end }}
    lifecycle:
      preStop:
        exec:
          command: ["sleep", "{{ $stopWait }}"]
    {{- $resources := deepCopy (default dict $model.resources) }}
    {{- if gt $gpus 0 }}
    {{- $limits := deepCopy (default dict $resources.limits) }}
    {{- $_ := set $limits "nvidia.com/gpu" $gpus }}
    {{- $_ := set $resources "limits" $limits }}
    {{- $requests := deepCopy (default dict $resources.requests) }}
    {{- $_ := set $requests "nvidia.com/gpu" $gpus }}
    {{- $_ := set $resources "requests" $requests }}
    {{- end }}
    resources:
      {{- toYaml $resources | nindent 6 }}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop: ["ALL"]
    volumeMounts:
      - name: model
        mountPath: /models
        readOnly: true
      - name: dshm
        mountPath: /dev/shm
      - name: tmp
        mountPath: /tmp
volumes:
  - name: model
    {{- toYaml $model.source.volume | nindent 4 }}
  - name: dshm
    emptyDir:
      medium: Memory
      sizeLimit: {{ $model.shmSize }}
  - name: tmp
    emptyDir:
      sizeLimit: 256Mi
{{- end -}}

{{/*
The models with modelDefaults filled in, as a YAML list (read it with
fromYamlArray). An entry's own resources, nodeSelector, tolerations, source
and extraArgs replace the defaults whole; its probes merge key by key.
*/}}
{{- define "strata.models" -}}
{{- $models := list -}}
{{- range $entry := .Values.models -}}
{{- $model := deepCopy $.Values.modelDefaults -}}
{{- range $key, $value := $entry -}}
{{- if and (eq $key "probes") (kindIs "map" $value) -}}
{{- $_ := set $model "probes" (mergeOverwrite (deepCopy $model.probes) $value) -}}
{{- else -}}
{{- $_ := set $model $key $value -}}
{{- end -}}
{{- end -}}
{{- $models = append $models $model -}}
{{- end -}}
{{- toYaml $models -}}
{{- end -}}
