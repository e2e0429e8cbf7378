// API Management (Standard v2): the secure gateway in front of ingest (devices) and web (people).
// Outbound VNet integration reaches the two internal load balancers in the AKS subnet; nothing
// in the cluster has a public address.

param location string
param name string
param tags object
param subnetId string
param publisherEmail string
param publisherName string
@description('Base URL of the ingest function inside the network (its internal load balancer).')
param ingestBackendUrl string
@description('Base URL of the web function inside the network.')
param webBackendUrl string
@description('Calls per minute one device may make through the gateway (ingest limits again, per device, itself).')
param deviceCallsPerMinute int

resource apim 'Microsoft.ApiManagement/service@2024-05-01' = {
  // checkov:skip=CKV_AZURE_174:the gateway is the public entry point for devices and people; the backends behind it are private
  name: name
  location: location
  tags: tags
  sku: { name: 'StandardV2', capacity: 1 }
  identity: { type: 'SystemAssigned' }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    virtualNetworkType: 'External'
    virtualNetworkConfiguration: { subnetResourceId: subnetId }
    customProperties: {
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls10': 'false'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls11': 'false'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls10': 'false'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls11': 'false'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Ssl30': 'false'
    }
  }
}

resource ingestUrl 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = {
  parent: apim
  name: 'ingest-backend-url'
  properties: { displayName: 'ingest-backend-url', value: ingestBackendUrl }
}

resource deviceCalls 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = {
  parent: apim
  name: 'device-calls-per-minute'
  properties: { displayName: 'device-calls-per-minute', value: string(deviceCallsPerMinute) }
}

// One API at the root, so the paths are the contract's (/api/telemetry, /api/alerts, /).
resource api 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  // checkov:skip=CKV_AZURE_215:devices authenticate with their SAS token and people with the admin token, both checked by iotstream; subscription keys would be a second device secret
  parent: apim
  name: 'iotstream'
  properties: {
    displayName: 'iotstream'
    path: ''
    protocols: ['https']
    serviceUrl: webBackendUrl
    subscriptionRequired: false
  }
}

resource apiPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: api
  name: 'policy'
  properties: { format: 'xml', value: loadTextContent('../policies/web.xml') }
}

resource telemetry 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = {
  parent: api
  name: 'post-telemetry'
  properties: { displayName: 'Send telemetry', method: 'POST', urlTemplate: '/api/telemetry' }
}

resource telemetryPolicy 'Microsoft.ApiManagement/service/apis/operations/policies@2024-05-01' = {
  parent: telemetry
  name: 'policy'
  properties: { format: 'xml', value: loadTextContent('../policies/telemetry.xml') }
  dependsOn: [ingestUrl, deviceCalls]
}

resource webGet 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = {
  parent: api
  name: 'get-web'
  properties: { displayName: 'Dashboard and query API', method: 'GET', urlTemplate: '/*' }
}

resource webPost 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = {
  parent: api
  name: 'post-web'
  properties: { displayName: 'Acknowledge alerts', method: 'POST', urlTemplate: '/*' }
}

output gatewayUrl string = apim.properties.gatewayUrl
