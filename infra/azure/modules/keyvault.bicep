// Key Vault: every secret of the app (SECRET_KEY, DATABASE_URL, provider tokens, METRICS_TOKEN,
// storage connection string) is a secret here and reaches the app as a Key Vault reference.
// Access by Azure RBAC; the web app's identity is granted "Key Vault Secrets User" in web.bicep.
param name string
param location string
param tags object
param workspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'premium' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    // Reachable from App Service's outbound addresses for Key Vault references: without a
    // VNet (the next step, docs/operations.md) a firewall would cut the app off its secrets.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'audit', enabled: true }]
  }
}

output name string = vault.name
