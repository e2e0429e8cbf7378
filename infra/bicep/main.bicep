// iotstream on Azure: the "Instant IoT data streaming with AKS" design. API Management in front,
// the functions (ingest, analyze, process, process-alerts, notify) and web on AKS with KEDA
// scaling the Kafka-triggered ones on lag, Event Hubs' Kafka endpoint as the bus, Cosmos DB
// (telemetry), PostgreSQL (results), Azure Managed Redis (cache), Key Vault (secrets), a
// container registry and Log Analytics.
//
// Deploy: README "Deploying to Azure". The outputs `settingsEnv` and `clusterEnv` are the two
// files infra/k8s needs (kubectl apply -k infra/k8s).

targetScope = 'resourceGroup'

@description('Region of every resource.')
param location string = resourceGroup().location

@description('Start of every resource name (lowercase letters and digits).')
@minLength(3)
@maxLength(10)
param namePrefix string = 'iotstream'

@description('Kubernetes namespace of the functions (must match infra/k8s/kustomization.yaml).')
param kubernetesNamespace string = 'iotstream'

@description('Service account the functions run as (must match infra/k8s/identity.yaml).')
param serviceAccountName string = 'iotstream'

@description('PostgreSQL administrator password (iotstream connects with it over TLS).')
@secure()
param postgresAdminPassword string

@description('Bearer token of the read and admin API (IOTSTREAM_ADMIN_TOKEN): at least 16 random characters.')
@secure()
@minLength(16)
param adminToken string

@description('Base64 of at least 32 random bytes (IOTSTREAM_MASTER_KEY): device keys derive from it; every ingest replica shares it.')
@secure()
@minLength(44)
param masterKey string

@description('Where alerts are POSTed (IOTSTREAM_WEBHOOK_URL).')
@secure()
param webhookUrl string

@description('HMAC-SHA256 signing secret of the webhook (IOTSTREAM_WEBHOOK_SECRET).')
@secure()
param webhookSecret string

@description('API Management publisher contact.')
param apimPublisherEmail string
param apimPublisherName string = 'iotstream'

@description('Calls per minute one device may make through the gateway.')
param deviceCallsPerMinute int = 600

@description('AKS nodes and their size.')
param aksNodeCount int = 3
param aksVmSize string = 'Standard_D4ds_v5'

@description('Entra ID groups given cluster admin (local cluster accounts are disabled).')
param aksAdminGroupObjectIds array

@description('CIDR ranges that may reach the Kubernetes API server (operators, CI).')
param aksApiServerAuthorizedIpRanges array

@description('Partitions per topic: the ceiling of each Kafka function\'s replicas.')
param partitions int = 8

@description('Seconds Cosmos DB keeps a reading; -1 keeps them.')
param readingTtlSeconds int = -1

param tags object = { application: 'iotstream' }

var suffix = uniqueString(resourceGroup().id)
var names = {
  network: '${namePrefix}-vnet'
  logs: '${namePrefix}-logs'
  identity: '${namePrefix}-functions'
  aks: '${namePrefix}-aks'
  registry: '${namePrefix}${suffix}'
  eventHubs: '${namePrefix}-${suffix}'
  cosmos: '${namePrefix}-${suffix}'
  postgres: '${namePrefix}-${suffix}'
  redis: '${namePrefix}-${suffix}'
  keyVault: 'kv-${namePrefix}-${take(suffix, 6)}'
  apim: '${namePrefix}-${suffix}'
}
// Fixed addresses of the internal load balancers of ingest and web, inside the AKS subnet
// (10.42.0.0/20); infra/k8s/services.yaml asks for them.
var ingestIp = '10.42.15.250'
var webIp = '10.42.15.251'

module network 'modules/network.bicep' = {
  name: 'network'
  params: { location: location, name: names.network, tags: tags }
}

module logs 'modules/monitoring.bicep' = {
  name: 'logs'
  params: { location: location, name: names.logs, tags: tags }
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: names.identity
  location: location
  tags: tags
}

module aks 'modules/aks.bicep' = {
  name: 'aks'
  params: {
    location: location
    name: names.aks
    tags: tags
    subnetId: network.outputs.aksSubnetId
    vnetName: names.network
    logAnalyticsId: logs.outputs.id
    identityName: identity.name
    kubernetesNamespace: kubernetesNamespace
    serviceAccountName: serviceAccountName
    nodeCount: aksNodeCount
    vmSize: aksVmSize
    adminGroupObjectIds: aksAdminGroupObjectIds
    apiServerAuthorizedIpRanges: aksApiServerAuthorizedIpRanges
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    location: location
    name: names.registry
    tags: tags
    kubeletPrincipalId: aks.outputs.kubeletPrincipalId
  }
}

module eventHubs 'modules/eventhubs.bicep' = {
  name: 'eventhubs'
  params: { location: location, name: names.eventHubs, tags: tags, partitions: partitions }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    location: location
    name: names.cosmos
    tags: tags
    principalId: identity.properties.principalId
    readingTtlSeconds: readingTtlSeconds
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    location: location
    name: names.postgres
    tags: tags
    subnetId: network.outputs.postgresSubnetId
    vnetId: network.outputs.id
    administratorPassword: postgresAdminPassword
  }
}

module redis 'modules/redis.bicep' = {
  name: 'redis'
  params: { location: location, name: names.redis, tags: tags }
}

resource eventHubsRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' existing = {
  name: '${names.eventHubs}/iotstream'
}

resource redisDb 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' existing = {
  name: '${names.redis}/default'
}

// Secret names are the keys of the Kubernetes Secret iotstream-secrets (infra/k8s/secrets.yaml).
module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    name: names.keyVault
    tags: tags
    principalId: identity.properties.principalId
    secrets: {
      'admin-token': adminToken
      'master-key': masterKey
      'webhook-url': webhookUrl
      'webhook-secret': webhookSecret
      'database-url': 'postgres://${postgres.outputs.administratorLogin}:${uriComponent(postgresAdminPassword)}@${postgres.outputs.host}:5432/${postgres.outputs.database}?sslmode=require'
      'cache-url': 'rediss://:${uriComponent(redisDb.listKeys().primaryKey)}@${redis.outputs.host}:10000'
      'eventhubs-connection-string': eventHubsRule.listKeys().primaryConnectionString
    }
  }
  dependsOn: [eventHubs]
}

module apim 'modules/apim.bicep' = {
  name: 'apim'
  params: {
    location: location
    name: names.apim
    tags: tags
    subnetId: network.outputs.apimSubnetId
    publisherEmail: apimPublisherEmail
    publisherName: apimPublisherName
    ingestBackendUrl: 'http://${ingestIp}'
    webBackendUrl: 'http://${webIp}'
    deviceCallsPerMinute: deviceCallsPerMinute
  }
}

var cosmosEndpoint = cosmos.outputs.endpoint

output gatewayUrl string = apim.outputs.gatewayUrl
output registry string = registry.outputs.loginServer
output aksName string = aks.outputs.name

@description('infra/k8s/settings.env: the functions\' non-secret settings (a ConfigMap).')
output settingsEnv string = join([
  'IOTSTREAM_BUS_URL=kafka://${eventHubs.outputs.bootstrapServers}'
  'IOTSTREAM_KAFKA_BROKERS=${eventHubs.outputs.bootstrapServers}'
  'IOTSTREAM_KAFKA_PROTOCOL=SaslSsl'
  'IOTSTREAM_KAFKA_AUTHENTICATION_MODE=Plain'
  'IOTSTREAM_KAFKA_USERNAME=$ConnectionString'
  'IOTSTREAM_KAFKA_PARTITIONS=${partitions}'
  'IOTSTREAM_TELEMETRY_STORE_URL=cosmos+${endsWith(cosmosEndpoint, '/') ? substring(cosmosEndpoint, 0, length(cosmosEndpoint) - 1) : cosmosEndpoint}'
  'IOTSTREAM_COSMOS_DATABASE=${cosmos.outputs.database}'
  ''
], '\n')

@description('infra/k8s/cluster.env: what the manifests are filled with (never reaches a pod).')
output clusterEnv string = join([
  'CLIENT_ID=${identity.properties.clientId}'
  'TENANT_ID=${subscription().tenantId}'
  'KEY_VAULT=${keyVault.outputs.name}'
  'INGEST_IP=${ingestIp}'
  'WEB_IP=${webIp}'
  ''
], '\n')
