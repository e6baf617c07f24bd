-- An insert-heavy SQLite script with deterministic output, run with and without LD_PRELOAD=libhakmem.so.
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, name TEXT, payload BLOB);
CREATE INDEX t_k ON t(k);
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
INSERT INTO t(k, name, payload)
  SELECT (i * 7919) % 1009, 'name-' || (i * 31 % 5003), zeroblob(i % 700) FROM n;
COMMIT;
UPDATE t SET name = name || '-' || k WHERE id % 3 = 0;
DELETE FROM t WHERE k % 10 = 1;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO t(k, name, payload) SELECT i % 17, printf('%08d', i), randomblob(0) FROM n;
SELECT count(*), sum(k), sum(length(name)), sum(length(payload)) FROM t;
SELECT k, count(*), max(length(name)) FROM t GROUP BY k ORDER BY k LIMIT 20;
SELECT group_concat(name, ',') FROM (SELECT name FROM t WHERE k = 5 ORDER BY id LIMIT 50);
CREATE TABLE agg AS SELECT k, count(*) AS c, total(length(payload)) AS bytes FROM t GROUP BY k;
SELECT sum(c), sum(bytes) FROM agg;
VACUUM;
SELECT count(*) FROM t;
