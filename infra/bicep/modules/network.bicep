// The virtual network: AKS nodes (and the internal load balancers of ingest and web), the
// PostgreSQL server (private access only), and API Management's outbound integration.

param location string
param name string
param tags object

@description('Address space of the network; the subnets below are carved from it.')
param addressPrefix string = '10.42.0.0/16'

var subnets = {
  aks: '10.42.0.0/20'
  postgres: '10.42.16.0/24'
  apim: '10.42.17.0/24'
}

resource aksNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${name}-aks-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource postgresNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${name}-postgres-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        name: 'postgres-from-aks'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: subnets.aks
          sourcePortRange: '*'
          destinationAddressPrefix: subnets.postgres
          destinationPortRange: '5432'
        }
      }
      {
        name: 'deny-other-vnet-inbound'
        properties: {
          priority: 4000
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: 'VirtualNetwork'
          sourcePortRange: '*'
          destinationAddressPrefix: subnets.postgres
          destinationPortRange: '*'
        }
      }
    ]
  }
}

resource apimNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${name}-apim-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [addressPrefix]
    }
    subnets: [
      {
        name: 'aks'
        properties: {
          addressPrefix: subnets.aks
          networkSecurityGroup: { id: aksNsg.id }
        }
      }
      {
        name: 'postgres'
        properties: {
          addressPrefix: subnets.postgres
          networkSecurityGroup: { id: postgresNsg.id }
          delegations: [
            {
              name: 'postgres'
              properties: { serviceName: 'Microsoft.DBforPostgreSQL/flexibleServers' }
            }
          ]
        }
      }
      {
        // API Management Standard v2 outbound integration: a dedicated subnet delegated to
        // Microsoft.Web/serverFarms.
        name: 'apim'
        properties: {
          addressPrefix: subnets.apim
          networkSecurityGroup: { id: apimNsg.id }
          delegations: [
            {
              name: 'apim'
              properties: { serviceName: 'Microsoft.Web/serverFarms' }
            }
          ]
        }
      }
    ]
  }
}

output id string = vnet.id
output aksSubnetId string = vnet.properties.subnets[0].id
output postgresSubnetId string = vnet.properties.subnets[1].id
output apimSubnetId string = vnet.properties.subnets[2].id
output aksSubnetPrefix string = subnets.aks
