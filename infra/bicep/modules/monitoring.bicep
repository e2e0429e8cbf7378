// Log Analytics: AKS container logs (Container insights) and the diagnostic settings of the
// data services.

param location string
param name string
param tags object

@description('Days logs are kept.')
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: retentionInDays
  }
}

output id string = workspace.id
