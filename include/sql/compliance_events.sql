-- Compliance events kept by a case-management or CRM system (history.compliance_events as a query).
-- Columns as the file export: debtor_id, event, channel, effective_date (YYYY-MM-DD), detail (JSON or empty).
SELECT debtor_id, event, channel, effective_date, detail
FROM compliance_events
WHERE effective_date <= :as_of
ORDER BY effective_date, debtor_id
