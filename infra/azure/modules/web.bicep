// App Service plan and Web App (Linux, Python 3.11) with a staging slot for swap deployments.
// Every secret is a Key Vault reference, read with the app's system-assigned identity. An
// optional setting is added only when its secret exists (a parameter says so): App Service
// passes an unresolvable reference on as its literal text, which the app would take as the value
// (abaco/settings.py refuses to start on such a value, as a second line of defence).
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
@description('A read replica is deployed: postgres.bicep wrote database-replica-url.')
param databaseReplica bool
@description('Key Vault holds slack-webhook-url (product alerts to Slack).')
param slackWebhook bool
@description('Key Vault holds email-url (product alerts and mail by SMTP).')
param emailUrl bool
// The container is reached only through App Service's front ends and its Linux middleware proxy,
// whose addresses are platform-internal (link-local and private ranges). They are believed for
// X-Forwarded-For/-Proto (gunicorn's forwarded_allow_ips and abaco.middleware read the same list):
// without them HTTPS is never seen, so SECURE_SSL_REDIRECT would redirect every request to
// itself, and every client would share the proxy's address (audit log, lockouts). The walk stops
// at the first address outside these ranges, so a forged header cannot pass for the client.
@description('Proxies whose forwarded headers are believed (addresses or networks, comma-separated).')
param trustedProxies string = '127.0.0.1,::1,169.254.0.0/16,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16'

var host = empty(siteHostName) ? '${name}-web.azurewebsites.net' : siteHostName
var vaultRef = '@Microsoft.KeyVault(VaultName=${vaultName};SecretName='
var requiredSettings = [
  { name: 'DEBUG', value: 'false' }
  { name: 'ALLOWED_HOSTS', value: host }
  { name: 'CSRF_TRUSTED_ORIGINS', value: 'https://${host}' }
  { name: 'TRUSTED_PROXIES', value: trustedProxies }
  { name: 'SECRET_KEY', value: '${vaultRef}secret-key)' }
  { name: 'DATABASE_URL', value: '${vaultRef}database-url)' }
  { name: 'AZURE_STORAGE_CONNECTION_STRING', value: '${vaultRef}storage-connection-string)' }
  { name: 'AZURE_STORAGE_ACCOUNT_NAME', value: storageAccountName }
  { name: 'METRICS_TOKEN', value: '${vaultRef}metrics-token)' }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsightsConnectionString }
  { name: 'SCM_DO_BUILD_DURING_DEPLOYMENT', value: 'true' }
  { name: 'WEBSITE_HEALTHCHECK_MAXPINGFAILURES', value: '3' }
]
var replicaSettings = databaseReplica ? [{ name: 'DATABASE_REPLICA_URL', value: '${vaultRef}database-replica-url)' }] : []
var slackSettings = slackWebhook ? [{ name: 'SLACK_WEBHOOK_URL', value: '${vaultRef}slack-webhook-url)' }] : []
var emailSettings = emailUrl ? [{ name: 'EMAIL_URL', value: '${vaultRef}email-url)' }] : []
var appSettings = concat(requiredSettings, replicaSettings, slackSettings, emailSettings)

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

// Built-in role Key Vault Secrets User: the identity's only role. It has none on Storage: the
// app reaches Blob Storage with the account key in AZURE_STORAGE_CONNECTION_STRING (settings
// AZURE_STORAGE_*), not with its identity, so a data role there would be unused privilege.
var secretsUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

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
