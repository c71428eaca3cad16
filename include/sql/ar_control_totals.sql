-- Control totals the AR system vouches for: open balance and row count per currency.
-- Compared with what extraction read; a mismatch stops the run before anyone is contacted.
SELECT
    currency                         AS currency,
    CAST(SUM(CAST(open_balance AS NUMERIC)) AS TEXT) AS open_amount,
    COUNT(*)                         AS rows
FROM ar_invoices
WHERE CAST(open_balance AS NUMERIC) <> 0
  AND CAST(issued_on AS TEXT) <= :as_of
GROUP BY currency
ORDER BY currency
