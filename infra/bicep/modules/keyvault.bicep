// Key Vault: every secret the functions need, written here from the other resources' keys and
// the deployment's secure parameters; AKS's secrets provider (CSI driver) mounts them and syncs
// them into the Kubernetes Secret the pods read (infra/k8s/secrets.yaml). RBAC only: the
// functions' identity can read secrets, nothing else.

param location string
param name string
param tags object
param principalId string
param tenantId string = subscription().tenantId
@description('Secret values by Key Vault secret name (letters, digits and dashes).')
@secure()
param secrets object

var secretsUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  // checkov:skip=CKV_AZURE_109:the AKS secrets provider reads over the public endpoint with Entra ID; add a private endpoint in production
  // checkov:skip=CKV_AZURE_189:see CKV_AZURE_109
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 30
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { bypass: 'AzureServices', defaultAction: 'Allow' }
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = [for s in items(secrets): {
  // checkov:skip=CKV_AZURE_41:an expiry date would stop the pipeline when reached; secrets rotate by redeploying with new values (the CSI driver picks them up within 2 minutes)
  parent: vault
  name: s.key
  properties: {
    value: s.value
    contentType: 'text/plain'
  }
}]

resource read 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, secretsUser)
  scope: vault
  properties: {
    roleDefinitionId: secretsUser
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = vault.name
