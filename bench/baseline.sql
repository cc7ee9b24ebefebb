-- The baseline: the script an extraction team writes without lopnr, for the
-- job that internal/synth writes (job.yaml). One DuckDB script over the same
-- files:
--
--   the cohort: I21 or I22 in par_sluten's HDIA or DIA1..DIA30, admitted
--   2015-01-01 to 2024-12-31, aged 18 or more at the first such admission;
--   then every par_sluten, lmed and dors row of its members with the job's
--   variables (HDIA cut to 3 characters, INDATUM as year-month, OP as is;
--   ATC, EDATUM as year; ULORSAK cut to 3), sorted by person, written as CSV
--   compressed with zstd.
--
-- No pseudonymisation (the identity number goes out as it is), no key store,
-- no encryption, no upload, no leak guard, and no identity checks: numbers
-- are stripped to their digits and given a century, nothing more, so
-- invalid, interim, reserve, changed and re-used numbers are not quarantined
-- or resolved as lopnr does (the row counts then differ; bench reports both).
--
-- bench (go run ./bench) runs it through duckdb-go, statement by statement,
-- after replacing {{DATA}} (the data directory), {{OUT}} (the output
-- directory) and {{REF}} (the reference date, YYYYMMDD), as a team would
-- with envsubst before `duckdb -f`.

CREATE MACRO digits(raw) AS regexp_replace(raw, '[^0-9]', '', 'g');

-- YYMMDD-NNNC: the latest century that is not after the reference date, one
-- earlier with a '+' (100 years or older).
CREATE MACRO pnr12(raw) AS CASE length(digits(raw))
    WHEN 12 THEN digits(raw)
    WHEN 10 THEN CAST((CASE WHEN TRY_CAST('20' || substr(digits(raw), 1, 6) AS INTEGER) <= {{REF}} THEN 20 ELSE 19 END)
        - (CASE WHEN contains(raw, '+') THEN 1 ELSE 0 END) AS VARCHAR) || digits(raw)
  END;

-- The birth date (a samordningsnummer has 60 added to the day).
CREATE MACRO birth(p) AS try_strptime(substr(p, 1, 6)
    || lpad(CAST(TRY_CAST(substr(p, 7, 2) AS INTEGER) % 60 AS VARCHAR), 2, '0'), '%Y%m%d')::DATE;

CREATE MACRO code3(c) AS left(upper(replace(trim(c), '.', '')), 3);

CREATE TABLE par AS
  SELECT pnr12(PNR) AS pnr, *
  FROM read_csv('{{DATA}}/par_sluten.csv', delim = ';', header = true, all_varchar = true);

CREATE TABLE cohort AS
  SELECT pnr FROM (
    SELECT pnr, min(try_strptime(trim(INDATUM), '%Y%m%d')::DATE) AS index_date, birth(pnr) AS born
    FROM par
    WHERE pnr IS NOT NULL
      AND regexp_matches(' ' || upper(concat_ws(' ', HDIA, *COLUMNS('^DIA[0-9]+$'))), '\sI2[12]')
      AND try_strptime(trim(INDATUM), '%Y%m%d')::DATE BETWEEN DATE '2015-01-01' AND DATE '2024-12-31'
    GROUP BY pnr
  )
  WHERE year(index_date) - year(born)
        - CASE WHEN strftime(index_date, '%m%d') < strftime(born, '%m%d') THEN 1 ELSE 0 END >= 18;

COPY (
  SELECT p.pnr AS PNR, code3(HDIA) AS HDIA, substr(trim(INDATUM), 1, 4) || '-' || substr(trim(INDATUM), 5, 2) AS INDATUM, OP
  FROM par p SEMI JOIN cohort c ON p.pnr = c.pnr
  ORDER BY p.pnr
) TO '{{OUT}}/par_sluten.csv.zst' (HEADER, DELIMITER ';', COMPRESSION zstd);

COPY (
  SELECT l.pnr AS PNR, ATC, left(trim(EDATUM), 4) AS EDATUM
  FROM (SELECT pnr12(PNR) AS pnr, ATC, EDATUM
        FROM read_csv('{{DATA}}/lmed.csv.zst', delim = ';', header = true, all_varchar = true, compression = 'zstd')) l
  SEMI JOIN cohort c ON l.pnr = c.pnr
  ORDER BY l.pnr
) TO '{{OUT}}/lmed.csv.zst' (HEADER, DELIMITER ';', COMPRESSION zstd);

COPY (
  SELECT d.pnr AS PNR, code3(ULORSAK) AS ULORSAK
  FROM (SELECT pnr12(PNR) AS pnr, ULORSAK
        FROM read_csv('{{DATA}}/dors.tsv', delim = '\t', header = true, all_varchar = true)) d
  SEMI JOIN cohort c ON d.pnr = c.pnr
  ORDER BY d.pnr
) TO '{{OUT}}/dors.csv.zst' (HEADER, DELIMITER ';', COMPRESSION zstd);
