-- Open receivables of the SQL AR system as of the run date, mapped to Dunning's canonical columns.
-- Amounts are cast to text so no float ever touches money; validation converts to minor units.
SELECT
    invoice_no                                   AS invoice_id,
    customer_id                                  AS debtor_id,
    doc_type                                     AS doc_type,  -- INV, CRN, ...: validation maps it
    CAST(issued_on AS TEXT)                      AS issue_date,
    CAST(due_on AS TEXT)                         AS due_date,
    currency                                     AS currency,
    CAST(amount AS TEXT)                         AS amount,
    CAST(open_balance AS TEXT)                   AS open_amount,
    reference                                    AS reference,
    CASE WHEN disputed = 1 THEN 'true' ELSE 'false' END AS disputed
FROM ar_invoices
WHERE CAST(open_balance AS NUMERIC) <> 0
  AND CAST(issued_on AS TEXT) <= :as_of
ORDER BY invoice_no
