"""HubSpot CRM: contacts, companies and deals for the ``daily_ingest`` job (docs/integrations.md)."""
