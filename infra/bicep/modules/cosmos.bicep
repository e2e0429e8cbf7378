// Cosmos DB for NoSQL: the telemetry store. Database and container are created here (with
// Entra ID the SDK cannot create them); keys are disabled, the functions' identity gets the
// built-in Data Contributor role (workload identity, no secret).

param location string
param name string
param tags object
param principalId string
@description('Database name (IOTSTREAM_COSMOS_DATABASE).')
param database string = 'iotstream'
@description('Seconds a reading is kept (the container default TTL); -1: forever.')
param readingTtlSeconds int = -1
@description('Autoscale ceiling in RU/s of the telemetry container (it scales from a tenth of it).')
param maxThroughput int = 4000

var dataContributor = '00000000-0000-0000-0000-000000000002'

resource account 'Microsoft.DocumentDB/databaseAccounts@2025-04-15' = {
  // checkov:skip=CKV_AZURE_101:public endpoint with Entra ID only (local auth disabled); add a private endpoint and set publicNetworkAccess Disabled in production
  // checkov:skip=CKV_AZURE_100:customer-managed keys are a compliance choice beyond the default service-managed encryption
  // checkov:skip=CKV_AZURE_99:IP rules would lock out the AKS egress address, which is only known after the cluster exists
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    locations: [
      { locationName: location, failoverPriority: 0, isZoneRedundant: false }
    ]
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
    backupPolicy: {
      type: 'Continuous'
      continuousModeProperties: { tier: 'Continuous7Days' }
    }
  }
}

resource db 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2025-04-15' = {
  parent: account
  name: database
  properties: {
    resource: { id: database }
  }
}

// CONTRACT §3: container telemetry, partition key /deviceId.
resource container 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2025-04-15' = {
  parent: db
  name: 'telemetry'
  properties: {
    resource: {
      id: 'telemetry'
      partitionKey: { paths: ['/deviceId'], kind: 'Hash', version: 2 }
      defaultTtl: readingTtlSeconds
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [{ path: '/tsMs/?' }, { path: '/deviceId/?' }]
        excludedPaths: [{ path: '/*' }]
      }
    }
    options: {
      autoscaleSettings: { maxThroughput: maxThroughput }
    }
  }
}

resource access 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2025-04-15' = {
  parent: account
  name: guid(account.id, principalId, dataContributor)
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributor}'
    principalId: principalId
    scope: account.id
  }
}

output endpoint string = account.properties.documentEndpoint
output database string = database
