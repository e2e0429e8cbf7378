// The container registry holding the iotstream image; AKS's kubelet identity pulls from it
// (no admin user, no pull secret).

param location string
param name string
param tags object
@description('Object id of the AKS kubelet identity, granted AcrPull.')
param kubeletPrincipalId string

var acrPull = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43fe172d538d')

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' = {
  // checkov:skip=CKV_AZURE_139:images are pushed from CI over the public endpoint; a private endpoint needs a build agent inside the network
  // checkov:skip=CKV_AZURE_165:one region; geo-replication is a multi-region deployment's choice
  // checkov:skip=CKV_AZURE_166:no quarantine workflow (images are built and pushed by our own CI)
  // checkov:skip=CKV_AZURE_233:zone redundancy is a Premium choice left to production parameters
  // checkov:skip=CKV_AZURE_237:dedicated data endpoints only matter behind firewall rules
  // checkov:skip=CKV_AZURE_164:image signing (notation) is left to the release pipeline
  // checkov:skip=CKV_AZURE_163:vulnerability scanning is Defender for Containers, a subscription-level plan
  name: name
  location: location
  tags: tags
  sku: { name: 'Premium' }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    policies: {
      retentionPolicy: { days: 30, status: 'enabled' }
    }
  }
}

resource pull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, kubeletPrincipalId, acrPull)
  scope: registry
  properties: {
    roleDefinitionId: acrPull
    principalId: kubeletPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output loginServer string = registry.properties.loginServer
