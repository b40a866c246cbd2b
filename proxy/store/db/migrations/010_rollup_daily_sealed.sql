-- `rollup_daily` is sealed once a day is over, instead of merged into on every flush.
--
-- Until 009 the writer's upsert merged each batch into the day's `rollup_daily` rows as well as
-- into its `rollup_hourly` rows: twelve histogram merges per group and flush instead of six, and
-- the daily rows' histograms are the largest (a whole day of latencies). That was about half of
-- the upsert's time in Postgres (bench/bench_rollup_upsert.py), for rows no reader needs before
-- the day ends: a window that ends today cuts today, so today's figures come from hourly rows.
--
-- From here on:
-- - `rollup_daily_sealed.through` is the watermark: every day before it has its complete
--   `rollup_daily` rows. Readers take whole days before it from `rollup_daily` and every later
--   hour from `rollup_hourly` (analytics/load_rollups.py), reading the watermark in the same
--   statement as the rows, so one snapshot sees both.
-- - The writer upserts a batch's daily rows only for days already over by the server's clock
--   (`clock_timestamp()`, read while the statement holds its lock on `rollup_hourly`): late events
--   (journal replays, spool adoptions, clocks behind) keep a sealed day exact, as before.
-- - `lectr_rollup_seal()` (the writer calls it when the UTC date changes, see
--   proxy/events/writer.py) rebuilds the days from the watermark to yesterday from their hourly
--   rows (`lectr_rollup_days`, migration 008) and moves the watermark to today.
--
-- Why no event is missed at midnight: the seal takes SHARE ROW EXCLUSIVE on `rollup_hourly`
-- before it reads the clock, and a writer's statement holds ROW EXCLUSIVE on it from its start to
-- its commit. So a writer that read the clock before midnight (and skipped the daily rows of the
-- day) has committed its hourly rows before the seal reads them; a writer that runs after the
-- seal reads the clock after midnight and upserts into the sealed day itself. A writer that
-- upserted into a day the seal then rebuilds is counted once: the rebuild is from hourly rows.
CREATE TABLE rollup_daily_sealed (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    through  date NOT NULL
);
-- Every writer so far upserted every day, so every day is complete now; today is the first day
-- the writer leaves to the seal.
INSERT INTO rollup_daily_sealed (through) VALUES ((clock_timestamp() AT TIME ZONE 'UTC')::date);

-- Seals the days that are over; returns the watermark. Cheap when there is nothing to seal (the
-- watermark is read first without a lock: each worker calls this when its date changes).
CREATE FUNCTION lectr_rollup_seal() RETURNS date
LANGUAGE plpgsql AS $$
DECLARE
    sealed date;
    today date;
BEGIN
    SELECT through INTO sealed FROM rollup_daily_sealed;
    IF sealed >= (clock_timestamp() AT TIME ZONE 'UTC')::date THEN
        RETURN sealed;
    END IF;
    LOCK TABLE rollup_hourly, rollup_daily IN SHARE ROW EXCLUSIVE MODE;
    today := (clock_timestamp() AT TIME ZONE 'UTC')::date;  -- after the lock: see above
    SELECT through INTO sealed FROM rollup_daily_sealed FOR UPDATE;
    IF sealed < today THEN
        PERFORM lectr_rollup_days(NULL, sealed::timestamp AT TIME ZONE 'UTC', today::timestamp AT TIME ZONE 'UTC');
        UPDATE rollup_daily_sealed SET through = today;
        sealed := today;
    END IF;
    RETURN sealed;
END
$$;
