// The AKS cluster: KEDA (scales analyze, process and notify on Kafka lag), workload identity
// (the functions' pods act as one user-assigned identity: Cosmos DB data plane, Key Vault
// secrets), the Key Vault secrets provider (CSI driver), Container insights.

param location string
param name string
param tags object
param subnetId string
@description('The network holding subnetId (Network Contributor is granted on it).')
param vnetName string
param logAnalyticsId string
@description('The identity the functions run as; federated with the service account below.')
param identityName string
param kubernetesNamespace string
param serviceAccountName string
param nodeCount int
param vmSize string
@description('Entra ID groups given cluster admin (kubectl through Entra ID; local accounts are disabled).')
@minLength(1)
param adminGroupObjectIds array
@description('CIDR ranges allowed to reach the Kubernetes API server (e.g. the operators\' and CI\'s addresses).')
@minLength(1)
param apiServerAuthorizedIpRanges array

var networkContributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4d97b98b-1d4f-4787-a291-c67834d212e7')

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' existing = {
  name: identityName
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' existing = {
  name: vnetName
}

resource cluster 'Microsoft.ContainerService/managedClusters@2025-10-01' = {
  // checkov:skip=CKV_AZURE_115:a private API server needs a jump host or VPN for kubectl; use authorizedIPRanges (parameter) or make it private in production
  // checkov:skip=CKV_AZURE_117:disk encryption sets (customer-managed keys) are a compliance choice beyond the default platform-managed encryption
  // checkov:skip=CKV_AZURE_170:the paid SLA tier is a production choice (sku.tier parameter below)
  // checkov:skip=CKV_AZURE_226:ephemeral OS disks depend on the VM size's cache; the default managed disk works for every size
  // checkov:skip=CKV_AZURE_227:host encryption must be enabled on the subscription first (EncryptionAtHost feature)
  // checkov:skip=CKV_AZURE_8:the Kubernetes dashboard add-on no longer exists on AKS (removed with Kubernetes 1.19), so it cannot be enabled
  // checkov:skip=CKV_AZURE_172:rotation is on: the add-on's config is a string map ('true'), where checkov looks for a boolean
  // checkov:skip=CKV_AZURE_232:one system pool keeps the example small; add a user pool for workloads in production
  name: name
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  sku: { name: 'Base', tier: 'Standard' }
  properties: {
    dnsPrefix: name
    enableRBAC: true
    disableLocalAccounts: true
    aadProfile: {
      managed: true
      enableAzureRBAC: true
      adminGroupObjectIDs: adminGroupObjectIds
    }
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        count: nodeCount
        vmSize: vmSize
        osType: 'Linux'
        osSKU: 'AzureLinux'
        type: 'VirtualMachineScaleSets'
        vnetSubnetID: subnetId
        maxPods: 50
        availabilityZones: ['1', '2', '3']
      }
    ]
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      networkPolicy: 'cilium'
      networkDataplane: 'cilium'
      podCidr: '192.168.0.0/16'
      serviceCidr: '10.0.0.0/16'
      dnsServiceIP: '10.0.0.10'
      loadBalancerSku: 'standard'
    }
    oidcIssuerProfile: { enabled: true }
    securityProfile: {
      workloadIdentity: { enabled: true }
      imageCleaner: { enabled: true, intervalHours: 24 }
    }
    // KEDA: the managed add-on (its version follows the cluster's Kubernetes version).
    workloadAutoScalerProfile: {
      keda: { enabled: true }
    }
    autoUpgradeProfile: {
      upgradeChannel: 'patch'
      nodeOSUpgradeChannel: 'NodeImage'
    }
    apiServerAccessProfile: {
      enablePrivateCluster: false
      authorizedIPRanges: apiServerAuthorizedIpRanges
    }
    addonProfiles: {
      omsagent: {
        enabled: true
        config: { logAnalyticsWorkspaceResourceID: logAnalyticsId }
      }
      azureKeyvaultSecretsProvider: {
        enabled: true
        config: { enableSecretRotation: 'true', rotationPollInterval: '2m' }
      }
      azurepolicy: { enabled: true }
    }
  }
}

// The functions' service account may act as the identity (workload identity federation).
resource federation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2024-11-30' = {
  parent: identity
  name: 'aks-${kubernetesNamespace}-${serviceAccountName}'
  properties: {
    issuer: cluster.properties.oidcIssuerProfile.issuerURL
    subject: 'system:serviceaccount:${kubernetesNamespace}:${serviceAccountName}'
    audiences: ['api://AzureADTokenExchange']
  }
}

// The cluster places the internal load balancers of ingest and web at fixed addresses of its
// subnet, which needs Network Contributor there.
resource subnetAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subnetId, cluster.id, networkContributor)
  scope: vnet
  properties: {
    roleDefinitionId: networkContributor
    principalId: cluster.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = cluster.name
output kubeletPrincipalId string = cluster.properties.identityProfile.kubeletidentity.objectId
output oidcIssuerUrl string = cluster.properties.oidcIssuerProfile.issuerURL
