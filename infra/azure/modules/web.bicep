// App Service plan and Web App (Linux, Python 3.11) with a staging slot for swap deployments.
// Every secret is a Key Vault reference, read with the app's system-assigned identity.
param name string
param location string
param tags object
param sku string
param instances int
param vaultName string
param storageAccountName string
param appInsightsConnectionString string
param siteHostName string
param workspaceId string

var host = empty(siteHostName) ? '${name}-web.azurewebsites.net' : siteHostName
var vaultRef = '@Microsoft.KeyVault(VaultName=${vaultName};SecretName='
var appSettings = [
  { name: 'DEBUG', value: 'false' }
  { name: 'ALLOWED_HOSTS', value: host }
  { name: 'CSRF_TRUSTED_ORIGINS', value: 'https://${host}' }
  { name: 'SECRET_KEY', value: '${vaultRef}secret-key)' }
  { name: 'DATABASE_URL', value: '${vaultRef}database-url)' }
  { name: 'DATABASE_REPLICA_URL', value: '${vaultRef}database-replica-url)' }
  { name: 'AZURE_STORAGE_CONNECTION_STRING', value: '${vaultRef}storage-connection-string)' }
  { name: 'AZURE_STORAGE_ACCOUNT_NAME', value: storageAccountName }
  { name: 'METRICS_TOKEN', value: '${vaultRef}metrics-token)' }
  { name: 'SLACK_WEBHOOK_URL', value: '${vaultRef}slack-webhook-url)' }
  { name: 'EMAIL_URL', value: '${vaultRef}email-url)' }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsightsConnectionString }
  { name: 'SCM_DO_BUILD_DURING_DEPLOYMENT', value: 'true' }
  { name: 'WEBSITE_HEALTHCHECK_MAXPINGFAILURES', value: '3' }
]

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: '${name}-plan'
  location: location
  tags: tags
  kind: 'linux'
  sku: { name: sku, capacity: instances }
  properties: {
    reserved: true
    zoneRedundant: instances > 1 && startsWith(sku, 'P')
  }
}

resource site 'Microsoft.Web/sites@2023-12-01' = {
  name: '${name}-web'
  location: location
  tags: tags
  kind: 'app,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    siteConfig: {
      linuxFxVersion: 'PYTHON|3.11'
      appCommandLine: 'bash infra/startup.sh'
      healthCheckPath: '/?page=health'
      alwaysOn: true
      http20Enabled: true
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      remoteDebuggingEnabled: false
      detailedErrorLoggingEnabled: true
      httpLoggingEnabled: true
      requestTracingEnabled: true
      appSettings: appSettings
    }
  }
}

resource staging 'Microsoft.Web/sites/slots@2023-12-01' = {
  parent: site
  name: 'staging'
  location: location
  tags: tags
  kind: 'app,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    siteConfig: {
      linuxFxVersion: 'PYTHON|3.11'
      appCommandLine: 'bash infra/startup.sh'
      healthCheckPath: '/?page=health'
      alwaysOn: true
      http20Enabled: true
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      remoteDebuggingEnabled: false
      detailedErrorLoggingEnabled: true
      httpLoggingEnabled: true
      requestTracingEnabled: true
      appSettings: appSettings
    }
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// Built-in roles: Key Vault Secrets User, Storage Blob Data Contributor.
var secretsUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
var blobContributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')

resource siteSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, site.id, secretsUser)
  scope: vault
  properties: { principalId: site.identity.principalId, roleDefinitionId: secretsUser, principalType: 'ServicePrincipal' }
}

resource slotSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, staging.id, secretsUser)
  scope: vault
  properties: { principalId: staging.identity.principalId, roleDefinitionId: secretsUser, principalType: 'ServicePrincipal' }
}

resource siteBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, site.id, blobContributor)
  scope: storageAccount
  properties: { principalId: site.identity.principalId, roleDefinitionId: blobContributor, principalType: 'ServicePrincipal' }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: workspaceId
    logs: [
      { category: 'AppServiceHTTPLogs', enabled: true }
      { category: 'AppServiceConsoleLogs', enabled: true }
      { category: 'AppServiceAppLogs', enabled: true }
    ]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output id string = site.id
output name string = site.name
output stagingHost string = staging.properties.defaultHostName
