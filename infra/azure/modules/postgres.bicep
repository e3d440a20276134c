// PostgreSQL Flexible Server: point-in-time restore for backupRetentionDays, geo-redundant
// backups (restore in the paired region), optional zone-redundant HA and a read replica.
// Entra ID authentication only (no password to leak); TLS required.
param name string
param location string
param tags object
param version string
param sku string
param tier string
param storageGb int
param backupRetentionDays int
param geoRedundantBackup bool
param highAvailability bool
param readReplica bool
param adminGroupObjectId string
param adminGroupName string
param workspaceId string

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2023-12-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: { name: sku, tier: tier }
  properties: {
    version: version
    storage: { storageSizeGB: storageGb, autoGrow: 'Enabled' }
    backup: {
      backupRetentionDays: backupRetentionDays
      geoRedundantBackup: geoRedundantBackup ? 'Enabled' : 'Disabled'
    }
    highAvailability: { mode: highAvailability ? 'ZoneRedundant' : 'Disabled' }
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: subscription().tenantId
    }
    // Without a VNet the app connects over the public endpoint: Entra ID tokens only, TLS
    // required, and only Azure's own addresses admitted (the rule below).
    network: { publicNetworkAccess: 'Enabled' }
  }
}

resource azureOnly 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2023-12-01-preview' = {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: { startIpAddress: '0.0.0.0', endIpAddress: '0.0.0.0' }
}

resource admin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2023-12-01-preview' = {
  parent: server
  name: adminGroupObjectId
  properties: {
    principalType: 'Group'
    principalName: adminGroupName
    tenantId: subscription().tenantId
  }
}

resource requireTls 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2023-12-01-preview' = {
  parent: server
  name: 'require_secure_transport'
  properties: { value: 'on', source: 'user-override' }
}

resource logConnections 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2023-12-01-preview' = {
  parent: server
  name: 'log_connections'
  properties: { value: 'on', source: 'user-override' }
  dependsOn: [requireTls]
}

resource logDisconnections 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2023-12-01-preview' = {
  parent: server
  name: 'log_disconnections'
  properties: { value: 'on', source: 'user-override' }
  dependsOn: [logConnections]
}

resource replica 'Microsoft.DBforPostgreSQL/flexibleServers@2023-12-01-preview' = if (readReplica) {
  name: '${name}-replica'
  location: location
  tags: tags
  sku: { name: sku, tier: tier }
  properties: {
    createMode: 'Replica'
    sourceServerResourceId: server.id
    network: { publicNetworkAccess: 'Enabled' }
  }
  dependsOn: [logDisconnections]
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: server
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
  }
}

output host string = server.properties.fullyQualifiedDomainName
output replicaHost string = readReplica ? replica.properties.fullyQualifiedDomainName : ''
