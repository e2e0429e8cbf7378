# syntax=docker/dockerfile:1
# The iotstream image: the Azure Functions host running `iotstream serve` as its custom handler
# (ingest, analyze, process, process-alerts, notify; infra/k8s/functions.yaml picks one per
# Deployment), every real engine built in. The same image runs `iotstream run web`
# (infra/k8s/web.yaml overrides the command).
#
#   docker build -t <registry>/iotstream:<tag> .

# Debian bookworm, like the Functions host image below: the binary links the same glibc and
# OpenSSL 3 (rdkafka's TLS).
FROM rust:1.95-bookworm AS installer-env
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features backends \
    && mkdir -p /home/site/wwwroot \
    && cp target/release/iotstream host.json /home/site/wwwroot/ \
    && cp -r functions/. /home/site/wwwroot/

# The Functions host for custom handlers is the .NET (in-process) host image; it says `dotnet`,
# a custom handler needs `custom`. It listens on 8080 so it can run as a non-root user.
FROM mcr.microsoft.com/azure-functions/dotnet:4
# checkov:skip=CKV_DOCKER_2:Kubernetes probes check health (infra/k8s); the runtime ignores HEALTHCHECK
ENV AzureWebJobsScriptRoot=/home/site/wwwroot \
    AzureFunctionsJobHost__Logging__Console__IsEnabled=true \
    FUNCTIONS_WORKER_RUNTIME=custom \
    ASPNETCORE_URLS=http://+:8080
COPY --from=installer-env ["/home/site/wwwroot", "/home/site/wwwroot"]
EXPOSE 8080
USER 10001:10001
