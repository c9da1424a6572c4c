WITH RECURSIVE
fn AS (
  SELECT p.oid FROM pg_catalog.pg_proc p
  WHERE (p.oid >= 16384 AND NOT (p.prolang IN (12, 13) AND EXISTS (
            SELECT 1 FROM pg_catalog.pg_depend e
            WHERE e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid AND e.deptype = 'e')))
     OR p.proname IN ('set_config', 'nextval', 'setval', 'dblink_connect', 'dblink_connect_u', 'set_limit')
),
danger AS (
  SELECT ':(func|opfunc)id (' || pg_catalog.string_agg(p.oid::text, '|') || ')\M' AS re
  FROM pg_catalog.pg_proc p WHERE p.oid < 16384 AND p.proname IN ('set_config', 'nextval', 'setval')
),
direct AS (
  SELECT t.tgrelid AS rel FROM pg_catalog.pg_trigger t WHERE NOT t.tgisinternal
  UNION SELECT r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.rulename <> '_RETURN'
  UNION SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relkind = 'f'
  UNION SELECT a.attrelid FROM pg_catalog.pg_attribute a WHERE a.attidentity <> '' AND NOT a.attisdropped
  UNION SELECT CASE d.classid
           WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN (SELECT ad.adrelid FROM pg_catalog.pg_attrdef ad WHERE ad.oid = d.objid)
           WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN (SELECT co.conrelid FROM pg_catalog.pg_constraint co WHERE co.oid = d.objid)
           WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass THEN (SELECT po.polrelid FROM pg_catalog.pg_policy po WHERE po.oid = d.objid)
           WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN (SELECT rw.ev_class FROM pg_catalog.pg_rewrite rw WHERE rw.oid = d.objid)
           WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN (SELECT i.indrelid FROM pg_catalog.pg_index i WHERE i.indexrelid = d.objid)
         END
    FROM pg_catalog.pg_depend d
    WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid IN (SELECT oid FROM fn)
  UNION SELECT ad.adrelid FROM pg_catalog.pg_attrdef ad, danger WHERE ad.adbin::text ~ danger.re
  UNION SELECT r.ev_class FROM pg_catalog.pg_rewrite r, danger WHERE r.ev_action::text ~ danger.re
  UNION SELECT po.polrelid FROM pg_catalog.pg_policy po, danger
    WHERE pg_catalog.concat(po.polqual::text, po.polwithcheck::text) ~ danger.re
  UNION SELECT co.conrelid FROM pg_catalog.pg_constraint co, danger WHERE co.conbin::text ~ danger.re
  UNION SELECT i.indrelid FROM pg_catalog.pg_index i, danger
    WHERE pg_catalog.concat(i.indexprs::text, i.indpred::text) ~ danger.re
  UNION SELECT a.attrelid FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_constraint co ON co.contypid = a.atttypid, danger
    WHERE co.conbin::text ~ danger.re AND NOT a.attisdropped
  UNION SELECT a.attrelid FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_constraint co ON co.contypid = a.atttypid
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = co.oid
      AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid IN (SELECT oid FROM fn)
    WHERE NOT a.attisdropped
),
hazard(rel) AS (
  SELECT rel FROM direct WHERE rel IS NOT NULL
  UNION
  SELECT up.rel FROM hazard h JOIN (
      SELECT r.ev_class AS rel, d.refobjid AS dep FROM pg_catalog.pg_rewrite r
        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
          AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      UNION ALL SELECT i.inhparent, i.inhrelid FROM pg_catalog.pg_inherits i
      UNION ALL SELECT co.confrelid, co.conrelid FROM pg_catalog.pg_constraint co
        WHERE co.contype = 'f' AND (co.confupdtype IN ('c', 'n', 'd') OR co.confdeltype IN ('c', 'n', 'd'))
    ) up ON up.dep = h.rel
)
SELECT 'r', pg_catalog.lower(c.relname::text) FROM pg_catalog.pg_class c WHERE c.oid IN (SELECT rel FROM hazard)
UNION SELECT 'f', pg_catalog.lower(p.proname::text) FROM pg_catalog.pg_proc p WHERE p.oid IN (SELECT oid FROM fn) AND p.oid >= 16384
UNION SELECT 'o', '' WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_operator o WHERE o.oid >= 16384 AND o.oprcode IN (SELECT oid FROM fn))
   OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast k WHERE k.oid >= 16384 AND k.castfunc IN (SELECT oid FROM fn))
