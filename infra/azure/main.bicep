// Abaco Loans Analytics on Azure (docs/operations.md): App Service (Linux, Python 3.11) with a
// staging slot, PostgreSQL Flexible Server (PITR, geo-redundant backups, optional HA and read
// replica), Key Vault (every secret as a Key Vault reference), geo-redundant Storage for raw
// files and backups, Log Analytics + Application Insights and the design's alerts.
//   az deployment group create -g <rg> -f infra/azure/main.bicep -p @infra/azure/parameters/<env>.json \
//       -p postgresAppPassword=<the database password: docs/operations.md, docs/runbooks/rotation.md>
targetScope = 'resourceGroup'

@description('Short environment name: staging or production.')
@allowed(['staging', 'production'])
param environment string

@description('Name prefix of every resource (lower case letters and digits).')
@minLength(3)
@maxLength(12)
param prefix string = 'abaco'

param location string = resourceGroup().location

@description('App Service plan SKU: S1 now (the design), P1v2 for high availability.')
@allowed(['S1', 'P1v2', 'P1v3'])
param appServiceSku string = 'S1'

@description('Instances of the web app (2 with P1v2 for high availability).')
@minValue(1)
param appServiceInstances int = 1

@description('PostgreSQL major version (the server and the backups\' pg_dump must match).')
@allowed(['15', '16', '17'])
param postgresVersion string = '16'

param postgresSku string = 'Standard_D2ds_v5'
param postgresTier string = 'GeneralPurpose'
param postgresStorageGb int = 128

@description('Days of point-in-time restore (7-35).')
@minValue(7)
@maxValue(35)
param postgresBackupRetentionDays int = 35

param postgresGeoRedundantBackup bool = true

@description('Zone-redundant high availability (a standby in another zone).')
param postgresHighAvailability bool = false

@description('A read replica for dashboards and the API (DATABASE_REPLICA_URL).')
param postgresReadReplica bool = false

@description('Entra ID group (object id) that administers the database server.')
param postgresAdminGroupObjectId string
param postgresAdminGroupName string

@description('The app\'s database role (the server\'s password administrator login; set at creation).')
param postgresAppLogin string = 'abaco'

@secure()
@description('Its password: written to Key Vault (database-password, database-url) by this deployment; a new value rotates it.')
param postgresAppPassword string

@description('Key Vault holds slack-webhook-url: set SLACK_WEBHOOK_URL on the web app.')
param slackWebhookSecret bool = false

@description('Key Vault holds email-url: set EMAIL_URL on the web app (else mail goes to smtp://localhost:25).')
param emailUrlSecret bool = false

@description('E-mail addresses the alerts go to.')
param alertEmails array

@description('Host name the site answers to (ALLOWED_HOSTS); the default *.azurewebsites.net when empty.')
param siteHostName string = ''

var name = '${prefix}-${environment}'
var tags = {
  application: 'abaco-loans-analytics'
  environment: environment
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    name: name
    location: location
    tags: tags
  }
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: '${prefix}${environment}kv'
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: '${prefix}${environment}st'
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceId
  }
}

module database 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    name: '${name}-pg'
    location: location
    tags: tags
    version: postgresVersion
    sku: postgresSku
    tier: postgresTier
    storageGb: postgresStorageGb
    backupRetentionDays: postgresBackupRetentionDays
    geoRedundantBackup: postgresGeoRedundantBackup
    highAvailability: postgresHighAvailability
    readReplica: postgresReadReplica
    adminGroupObjectId: postgresAdminGroupObjectId
    adminGroupName: postgresAdminGroupName
    workspaceId: monitoring.outputs.workspaceId
    appLogin: postgresAppLogin
    appPassword: postgresAppPassword
    databaseName: 'abaco'
    vaultName: vault.outputs.name
  }
}

module web 'modules/web.bicep' = {
  name: 'web'
  params: {
    name: name
    location: location
    tags: tags
    sku: appServiceSku
    instances: appServiceInstances
    vaultName: vault.outputs.name
    storageAccountName: storage.outputs.name
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    siteHostName: siteHostName
    workspaceId: monitoring.outputs.workspaceId
    // Set only when postgres.bicep wrote the secret (the web app starts after it exists).
    databaseReplica: !empty(database.outputs.replicaUrlSecret)
    slackWebhook: slackWebhookSecret
    emailUrl: emailUrlSecret
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    name: name
    location: location
    tags: tags
    alertEmails: alertEmails
    webAppId: web.outputs.id
    appInsightsId: monitoring.outputs.appInsightsId
    workspaceId: monitoring.outputs.workspaceId
  }
}

output webAppName string = web.outputs.name
output stagingHost string = web.outputs.stagingHost
output postgresHost string = database.outputs.host
output postgresReplicaHost string = database.outputs.replicaHost
output vaultName string = vault.outputs.name
