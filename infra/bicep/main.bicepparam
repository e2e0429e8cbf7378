// Parameters of main.bicep. Secrets come from the deploying shell's environment, never a file:
//   export IOTSTREAM_PG_PASSWORD=... IOTSTREAM_ADMIN_TOKEN=... IOTSTREAM_MASTER_KEY=...
//   export IOTSTREAM_WEBHOOK_URL=... IOTSTREAM_WEBHOOK_SECRET=...
//   az deployment group create -g <group> -f infra/bicep/main.bicep -p infra/bicep/main.bicepparam
using 'main.bicep'

param apimPublisherEmail = 'ops@example.com'
param aksAdminGroupObjectIds = ['00000000-0000-0000-0000-000000000000']
param aksApiServerAuthorizedIpRanges = ['203.0.113.0/24']

param postgresAdminPassword = readEnvironmentVariable('IOTSTREAM_PG_PASSWORD')
param adminToken = readEnvironmentVariable('IOTSTREAM_ADMIN_TOKEN')
param masterKey = readEnvironmentVariable('IOTSTREAM_MASTER_KEY')
param webhookUrl = readEnvironmentVariable('IOTSTREAM_WEBHOOK_URL')
param webhookSecret = readEnvironmentVariable('IOTSTREAM_WEBHOOK_SECRET')
