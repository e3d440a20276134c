// PostgreSQL Flexible Server: point-in-time restore for backupRetentionDays, geo-redundant
// backups (restore in the paired region), optional zone-redundant HA and a read replica.
// Authentication: the app signs in with a password (abaco/settings.py reads a plain
// DATABASE_URL), as the server's administrator login, which needs CREATEDB for restore_check's
// scratch database; people sign in with Entra ID through the admin group. The password is a
// deployment parameter, never stored in the templates: this module writes it, and the URLs the
// app reads, to Key Vault (database-password, database-url and, with a replica,
// database-replica-url), so a deployment and its secrets always agree. TLS required.
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
@description('The app\'s role: the server\'s password administrator login.')
param appLogin string
@secure()
@description('Its password (docs/runbooks/rotation.md): rotated by deploying with a new one.')
param appPassword string
@description('The database the app uses.')
param databaseName string
@description('Key Vault the connection secrets are written to.')
param vaultName string

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
    administratorLogin: appLogin
    administratorLoginPassword: appPassword
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Enabled'
      tenantId: subscription().tenantId
    }
    // Without a VNet the app connects over the public endpoint: TLS required, and only Azure's
    // own addresses admitted (the rule below).
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

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2023-12-01-preview' = {
  parent: server
  name: databaseName
  properties: { charset: 'UTF8', collation: 'en_US.utf8' }
  dependsOn: [logDisconnections]
}

// The connection secrets the web app reads as Key Vault references (web.bicep). The replica
// shares the primary's roles and passwords, so its URL differs only in the host.
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

var credentials = '${uriComponent(appLogin)}:${uriComponent(appPassword)}'
var urlTail = ':5432/${databaseName}?sslmode=require'

resource passwordSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'database-password'
  properties: { value: appPassword, contentType: 'text/plain' }
}

resource urlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'database-url'
  properties: {
    value: 'postgres://${credentials}@${server.properties.fullyQualifiedDomainName}${urlTail}'
    contentType: 'text/plain'
  }
}

resource replicaUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (readReplica) {
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov reads a conditional resource's properties one level too high
  parent: vault
  name: 'database-replica-url'
  properties: {
    value: 'postgres://${credentials}@${replica.properties.fullyQualifiedDomainName}${urlTail}'
    contentType: 'text/plain'
  }
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
output databaseUrlSecret string = urlSecret.name
output replicaUrlSecret string = readReplica ? replicaUrlSecret.name : ''
