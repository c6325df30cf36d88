-- Schema version 2: what the collector of one replica must see of every other replica's work.
-- A touch (a HEAD, a mount, a commit, a manifest push, a lease taking content) is the unix second a
-- digest was last used; `doomed_at` is set while a collector removes the digest. One row per digest,
-- so a touch and a doom of one digest serialise on its row lock: whichever comes second sees the
-- other (see lease.rs).
CREATE TABLE touches (
    digest text PRIMARY KEY,
    at bigint NOT NULL,
    doomed_at bigint
);
CREATE INDEX touches_by_time ON touches (at);
