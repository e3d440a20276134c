// The design's alerts (docs/design.md, "Health and operations"; docs/operations.md):
// response time over 5 s, 5xx over 1% of requests, availability under 99%, a pipeline failure,
// a data-quality drop and stale data. Metric alerts on the web app, log alerts on the
// application's own log lines in Application Insights (OpenTelemetry, abaco/telemetry.py).
param name string
param location string
param tags object
param alertEmails array
param webAppId string
param appInsightsId string
param workspaceId string

resource group 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${name}-ops'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'abaco-ops'
    enabled: true
    emailReceivers: [for (address, i) in alertEmails: {
      name: 'ops-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

resource slow 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${name}-response-time'
  location: 'global'
  tags: tags
  properties: {
    description: 'Average response time over 5 s for 5 minutes.'
    severity: 2
    enabled: true
    scopes: [webAppId]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [{
        criterionType: 'StaticThresholdCriterion'
        name: 'response-time'
        metricName: 'HttpResponseTime'
        operator: 'GreaterThan'
        threshold: 5
        timeAggregation: 'Average'
      }]
    }
    actions: [{ actionGroupId: group.id }]
  }
}

resource unavailable 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${name}-availability'
  location: 'global'
  tags: tags
  properties: {
    description: 'Health check status (/?page=health) under 99% over an hour.'
    severity: 1
    enabled: true
    scopes: [webAppId]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT1H'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [{
        criterionType: 'StaticThresholdCriterion'
        name: 'health'
        metricName: 'HealthCheckStatus'
        operator: 'LessThan'
        threshold: 99
        timeAggregation: 'Average'
      }]
    }
    actions: [{ actionGroupId: group.id }]
  }
}

var logAlerts = [
  {
    key: 'errors-5xx'
    description: 'More than 1% of requests answered 5xx in 15 minutes.'
    severity: 1
    query: 'AppRequests | summarize total = count(), failed = countif(toint(ResultCode) >= 500) | where total > 0 and failed * 100.0 / total > 1'
    window: 'PT15M'
  }
  {
    key: 'pipeline-failed'
    description: 'A pipeline run failed (integrations.pipelines logs "pipeline failed").'
    severity: 2
    query: 'AppTraces | where Message == "pipeline failed"'
    window: 'PT15M'
  }
  {
    key: 'data-quality'
    description: 'A data-quality check flagged a drop in rows or changed columns.'
    severity: 2
    query: 'AppTraces | where Message == "pipeline step" and tostring(Properties.detail) startswith "data quality:"'
    window: 'PT15M'
  }
  {
    key: 'stale-data'
    description: 'No KPI snapshot computed in 26 hours (kpi_daily runs every morning).'
    severity: 2
    // 26 hours, not 24: a morning run a little later than yesterday's is not an alert. A window
    // must be one of Azure's fixed sizes, so the query reads two days (overrideQueryTimeRange
    // below) and its own filter applies the 26 hours; with a one-day window it never could.
    query: 'AppTraces | where TimeGenerated > ago(26h) and Message == "snapshot computed" | count | where Count == 0'
    window: 'P1D'
  }
]

resource rules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in logAlerts: {
  name: '${name}-${rule.key}'
  location: location
  tags: tags
  properties: {
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [workspaceId]
    evaluationFrequency: rule.key == 'stale-data' ? 'PT1H' : 'PT5M'
    windowSize: rule.window
    overrideQueryTimeRange: rule.key == 'stale-data' ? 'P2D' : null
    criteria: {
      allOf: [{
        query: rule.query
        timeAggregation: 'Count'
        operator: 'GreaterThan'
        threshold: 0
        failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
      }]
    }
    actions: { actionGroups: [group.id] }
  }
}]

output actionGroupId string = group.id
output appInsights string = appInsightsId
