-- Insert-heavy SQLite workload for the "real program" benchmark: run as
-- `sqlite3 :memory: '.read prog_inserts.sql'` under each allocator (LD_PRELOAD), timed as a whole process by bench/run.py.
-- The database lives in memory, so its pages are malloc'd (SQLite's page cache) and no file I/O
-- is measured. Rows come from recursive CTEs, so the file stays small. Row contents depend only on
-- the row number, so the final SELECT prints the same line under every allocator.
PRAGMA cache_size = -65536;
CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, price REAL, payload BLOB);
CREATE INDEX item_name ON item(name);
CREATE INDEX item_grp ON item(grp, price);

-- 1) Bulk insert in one transaction; keys arrive in scrambled order, so the name index splits
--    pages all over (many mid-size mallocs of pages and cells).
BEGIN;
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 60000)
INSERT INTO item(id, name, grp, price, payload)
SELECT x, printf('item-%08x-%d', (x * 2654435761) % 4294967296, x), (x * 7919) % 997,
       ((x * 104729) % 100000) / 100.0, zeroblob(16 + (x * 37) % 240)
FROM n;
COMMIT;

-- 2) A second table, in autocommit mode (its own in-memory journal), whose foreign-key index
--    receives keys in scrambled order.
CREATE TABLE event(id INTEGER PRIMARY KEY, item INTEGER, kind TEXT, note TEXT);
CREATE INDEX event_item ON event(item);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 40000)
INSERT INTO event(item, kind, note)
SELECT 1 + (x * 48271) % 60000, CASE x % 3 WHEN 0 THEN 'view' WHEN 1 THEN 'buy' ELSE 'return' END,
       substr('note note note note note note note note note note note note', 1, 5 + x % 50)
FROM n;

-- 3) Churn: delete a third, update prices (index entries move), insert replacement rows.
DELETE FROM item WHERE id % 3 = 0;
UPDATE item SET price = price * 1.1, name = name || '-u' WHERE grp % 5 = 0;
WITH RECURSIVE n(x) AS (SELECT 60001 UNION ALL SELECT x + 1 FROM n WHERE x < 80000)
INSERT INTO item(id, name, grp, price, payload)
SELECT x, printf('new-%08x', (x * 2246822519) % 4294967296), x % 997, (x % 5000) / 10.0,
       zeroblob(32 + x % 500)
FROM n;

-- 4) Aggregates with temporary B-trees (GROUP BY, ORDER BY), then the check line.
CREATE TABLE summary AS
SELECT i.grp AS grp, count(*) AS n, round(sum(i.price), 2) AS total, count(e.id) AS events
FROM item i LEFT JOIN event e ON e.item = i.id GROUP BY i.grp ORDER BY total DESC;
SELECT 'check=' || (SELECT count(*) FROM item) || '/' || (SELECT count(*) FROM event) || '/'
       || (SELECT sum(n) FROM summary) || '/' || (SELECT round(sum(total), 2) FROM summary) || '/'
       || (SELECT sum(length(name)) FROM item) || '/' || (SELECT sum(length(payload)) FROM item);
