// PostgreSQL Flexible Server: the results store (alerts, windows, checkpoints, outbox). Private
// access only: a delegated subnet and a private DNS zone linked to the network.

param location string
param name string
param tags object
param subnetId string
param vnetId string
@secure()
param administratorPassword string
param administratorLogin string = 'iotstream'
param database string = 'iotstream'
@description('Compute: Burstable Standard_B2s is enough to try it; GeneralPurpose Standard_D4ds_v5 for a fleet.')
param skuName string = 'Standard_D2ds_v5'
@allowed(['Burstable', 'GeneralPurpose', 'MemoryOptimized'])
param skuTier string = 'GeneralPurpose'
param storageSizeGB int = 128
param backupRetentionDays int = 14

resource dns 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: '${name}.private.postgres.database.azure.com'
  location: 'global'
  tags: tags
}

resource dnsLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: dns
  name: 'vnet'
  location: 'global'
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnetId }
  }
}

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2025-08-01' = {
  // checkov:skip=CKV_AZURE_136:geo-redundant backup is a disaster-recovery choice (backupRetentionDays and zone HA are set)
  name: name
  location: location
  tags: tags
  sku: { name: skuName, tier: skuTier }
  properties: {
    version: '16'
    administratorLogin: administratorLogin
    administratorLoginPassword: administratorPassword
    authConfig: { activeDirectoryAuth: 'Disabled', passwordAuth: 'Enabled' }
    storage: { storageSizeGB: storageSizeGB, autoGrow: 'Enabled' }
    backup: { backupRetentionDays: backupRetentionDays, geoRedundantBackup: 'Disabled' }
    highAvailability: { mode: skuTier == 'Burstable' ? 'Disabled' : 'ZoneRedundant' }
    network: {
      delegatedSubnetResourceId: subnetId
      privateDnsZoneArmResourceId: dns.id
      publicNetworkAccess: 'Disabled'
    }
  }
  dependsOn: [dnsLink]
}

// TLS is required (the default); iotstream connects with sslmode=require.
resource requireTls 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2025-08-01' = {
  parent: server
  name: 'require_secure_transport'
  properties: { value: 'on', source: 'user-override' }
}

resource logConnections 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2025-08-01' = {
  parent: server
  name: 'log_connections'
  properties: { value: 'on', source: 'user-override' }
  dependsOn: [requireTls]
}

resource db 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2025-08-01' = {
  parent: server
  name: database
  properties: { charset: 'UTF8', collation: 'en_US.utf8' }
}

output host string = server.properties.fullyQualifiedDomainName
output administratorLogin string = administratorLogin
output database string = db.name
