-- The business date the AR system was last closed; a stale close stops the run.
SELECT MAX(as_of) AS as_of FROM ar_extract_runs
