// Event Hubs with its Kafka endpoint (<namespace>.servicebus.windows.net:9093): the bus. One
// event hub per iotstream topic and per dead-letter topic; Kafka consumer groups are created by
// the clients themselves (Event Hubs keeps Kafka groups apart from its own consumer groups).

param location string
param name string
param tags object
@description('Partitions per topic: the ceiling of analyze/process/notify replicas (KEDA caps replicas at the partition count). Standard allows up to 32.')
@minValue(1)
@maxValue(32)
param partitions int = 8
@description('Days records are kept (Standard: at most 7).')
@minValue(1)
@maxValue(7)
param retentionDays int = 7
@description('Throughput units (1 MB/s or 1,000 events/s in each); auto-inflate up to maxThroughputUnits.')
param throughputUnits int = 2
param maxThroughputUnits int = 20

// The topics (CONTRACT §3) and their dead-letter twins (<topic>.dead-letter).
var hubs = [
  'telemetry'
  'insights'
  'alerts'
  'telemetry.dead-letter'
  'insights.dead-letter'
  'alerts.dead-letter'
]

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard', capacity: throughputUnits }
  properties: {
    kafkaEnabled: true
    minimumTlsVersion: '1.2'
    isAutoInflateEnabled: true
    maximumThroughputUnits: maxThroughputUnits
    // The Kafka clients (librdkafka in iotstream, the Functions Kafka extension, KEDA's scaler)
    // authenticate with the namespace connection string (SASL PLAIN over TLS).
    disableLocalAuth: false
    publicNetworkAccess: 'Enabled'
  }
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = [for h in hubs: {
  parent: namespace
  name: h
  properties: {
    partitionCount: partitions
    messageRetentionInDays: retentionDays
  }
}]

// Manage lets iotstream create a topic that is missing (dead letters of a new topic); Listen and
// Send are what the pipeline does.
resource rule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: namespace
  name: 'iotstream'
  properties: {
    rights: ['Manage', 'Listen', 'Send']
  }
}

output name string = namespace.name
output bootstrapServers string = '${namespace.name}.servicebus.windows.net:9093'
output ruleId string = rule.id
output hubs array = hubs
