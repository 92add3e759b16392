#!/usr/bin/env bash
# System packages rtml's local runtime and tests need: a JDK and Maven (the Kafka broker is
# started from Maven Central jars), Redis (Feast online store tests), Prometheus (canary analysis
# tests), Go (helm, kubeconform and kustomize are built with `go install`). Installs only what is
# missing; needs root for apt.
set -euo pipefail
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || need+=(golang-go)
command -v wrk >/dev/null 2>&1 || need+=(wrk)  # load generator of benchmarks/serving.py
# A C compiler and Python's headers, for dependencies that build from source where no wheel fits.
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
  2>/dev/null || need+=(python3-dev)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (run as root, or install them: apt-get install -y ${need[*]})" >&2
  exit 0
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian redis-server and prometheus packages start system services (6379, 9090 and the node
# exporter on 9100); rtml starts its own on free ports.
for svc in redis-server prometheus prometheus-node-exporter; do
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
  service "$svc" stop >/dev/null 2>&1 || true
done
