#!/usr/bin/env bash
# End-to-end on a kind cluster (needs Docker, kind, kubectl; helm/kustomize come from `python -m rtml.k8s_tools`):
# cert-manager + KServe (Standard mode, Gateway API), the rtml image, the chart, a V2 call, a canary promotion.
#   tests/e2e/kind/run.sh            # create cluster, install, test
#   KEEP=1 tests/e2e/kind/run.sh     # keep the cluster afterwards
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
CLUSTER=${CLUSTER:-rtml-e2e}
NS=${NS:-rtml}
KSERVE_VERSION=${KSERVE_VERSION:-v0.20.0}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.16.2}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.2.1}
IMAGE=ghcr.io/rtml-project/rtml:e2e
PY=${PY:-$ROOT/.venv/bin/python}
eval "$("$PY" -c 'from rtml.k8s_tools import ensure_tools; [print(f"{k.upper()}={v}") for k, v in ensure_tools().items()]')"

cleanup() { [[ "${KEEP:-0}" == 1 ]] || kind delete cluster --name "$CLUSTER"; }
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --wait 120s
docker build -t "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
kubectl -n cert-manager rollout status deploy/cert-manager-webhook --timeout=300s
kubectl apply -f "https://github.com/kubernetes-sigs/gateway-api/releases/download/${GATEWAY_API_VERSION}/standard-install.yaml"
kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/${KSERVE_VERSION}/kserve-crds.yaml"
kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/${KSERVE_VERSION}/kserve.yaml"
kubectl -n kserve rollout status deploy/kserve-controller-manager --timeout=300s
kubectl -n kserve patch configmap inferenceservice-config --type merge \
  -p '{"data":{"deploy":"{\"defaultDeploymentMode\":\"Standard\"}"}}'

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create secret generic rtml-postgresql --from-literal=password="$(openssl rand -hex 12)" \
  --dry-run=client -o yaml | kubectl apply -f -
# A model volume the predictors read (pvc://rtml-models/...); the demo trains into it.
kubectl -n "$NS" apply -f - <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: rtml-models}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
YAML

"$HELM" upgrade --install rtml "$ROOT/helm/rtml" -n "$NS" -f "$ROOT/helm/rtml/ci/minimal-values.yaml" \
  --set image.tag=e2e --set image.pullPolicy=Never --set serving.deploymentMode=Standard \
  --set monitoring.serviceMonitor.enabled=false --set monitoring.podMonitor.enabled=false \
  --set networkPolicy.enabled=false --wait --timeout 15m

kubectl -n "$NS" wait --for=condition=Ready inferenceservice/fraud --timeout=600s
kubectl -n "$NS" port-forward svc/fraud-transformer 18080:80 >/dev/null 2>&1 &
PF=$!; trap 'kill $PF; cleanup' EXIT
sleep 3
curl -sf http://127.0.0.1:18080/v2/health/ready
curl -sf -X POST http://127.0.0.1:18080/v2/models/fraud/infer -H 'Content-Type: application/json' \
  -d '{"inputs":[{"name":"customer_id","shape":[1],"datatype":"INT64","data":[1]},
                 {"name":"terminal_id","shape":[1],"datatype":"INT64","data":[1]},
                 {"name":"tx_amount","shape":[1],"datatype":"FP64","data":[42.5]}]}'
echo

# Canary: second model version as spec.canary, then promote through the CLI.
"$HELM" upgrade rtml "$ROOT/helm/rtml" -n "$NS" --reuse-values -f "$ROOT/helm/rtml/ci/standard-canary-values.yaml" \
  --set serving.httpRoute.enabled=false --wait --timeout 10m
"$ROOT/.venv/bin/rtml" canary status --name fraud --namespace "$NS" --mode Standard
"$ROOT/.venv/bin/rtml" canary promote --name fraud --namespace "$NS" --mode Standard
test "$(kubectl -n "$NS" get isvc fraud -o jsonpath='{.spec.predictor.name}')" = challenger
test -z "$(kubectl -n "$NS" get isvc fraud -o jsonpath='{.spec.canary}')"
echo "e2e OK"
