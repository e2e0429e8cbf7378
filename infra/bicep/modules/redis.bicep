// Azure Managed Redis (Microsoft.Cache/redisEnterprise; Azure Cache for Redis is retiring): the
// latest-state cache and the live channel. TLS on port 10000; Enterprise clustering, so a
// client that is not cluster-aware (iotstream's) sees one endpoint.

param location string
param name string
param tags object
@description('Azure Managed Redis size, e.g. Balanced_B1 (about 1 GB), Balanced_B5, MemoryOptimized_M10.')
param skuName string = 'Balanced_B1'

resource cache 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: skuName }
  properties: {
    minimumTlsVersion: '1.2'
    highAvailability: 'Enabled'
    publicNetworkAccess: 'Enabled'
  }
}

resource db 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: cache
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: 10000
    clusteringPolicy: 'EnterpriseCluster'
    // The cache holds open alerts' state as well as latest values: never evict.
    evictionPolicy: 'NoEviction'
    // iotstream authenticates with the access key in its rediss:// URL.
    accessKeysAuthentication: 'Enabled'
  }
}

output host string = cache.properties.hostName
output databaseId string = db.id
