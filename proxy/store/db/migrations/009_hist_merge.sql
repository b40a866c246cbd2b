-- lectr_hist_merge (migration 005), cheaper: the writer's upsert merges twelve histograms per group
-- and flush (six each in rollup_hourly and rollup_daily), and with real spreads of latency each has
-- ~50-150 buckets. The set-based version (unnest both, UNION ALL, GROUP BY, two array_agg sorts)
-- cost ~30 of the ~60-110 ms a flush of 5,000 events spent in Postgres; walking the two sorted
-- arrays side by side costs ~20 % less of the whole upsert (bench/README.md, "Event writer").
--
-- Same results for the histograms the tables hold: bucket indexes ascending without repeats (every
-- writer keeps them so: Python's `Counter` then `sorted`, SQL's GROUP BY then ORDER BY), either side
-- possibly null or empty.
CREATE OR REPLACE FUNCTION lectr_hist_merge(b1 integer[], c1 bigint[], b2 integer[], c2 bigint[],
                                            OUT buckets integer[], OUT counts bigint[])
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    i integer := 1;
    j integer := 1;
    n1 integer := coalesce(cardinality(b1), 0);
    n2 integer := coalesce(cardinality(b2), 0);
BEGIN
    IF n2 = 0 THEN
        buckets := coalesce(b1, '{}');
        counts := coalesce(c1, '{}');
        RETURN;
    END IF;
    IF n1 = 0 THEN
        buckets := b2;
        counts := c2;
        RETURN;
    END IF;
    buckets := '{}';
    counts := '{}';
    WHILE i <= n1 OR j <= n2 LOOP
        IF j > n2 OR (i <= n1 AND b1[i] < b2[j]) THEN
            buckets := buckets || b1[i];
            counts := counts || c1[i];
            i := i + 1;
        ELSIF i > n1 OR b2[j] < b1[i] THEN
            buckets := buckets || b2[j];
            counts := counts || c2[j];
            j := j + 1;
        ELSE
            buckets := buckets || b1[i];
            counts := counts || (c1[i] + c2[j]);
            i := i + 1;
            j := j + 1;
        END IF;
    END LOOP;
END
$$;
