-- wharf's metadata on Postgres, schema version 1: the tables redb holds in the embedded backend, one
-- table each, same keys. Digests are text (`sha256:<hex>`), times unix seconds, records JSON.

CREATE TABLE tags (
    repo text NOT NULL,
    tag text NOT NULL,
    digest text NOT NULL,
    PRIMARY KEY (repo, tag)
);
CREATE TABLE manifests (
    repo text NOT NULL,
    digest text NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_by_digest ON manifests (digest);
CREATE TABLE blobs (
    repo text NOT NULL,
    digest text NOT NULL,
    size bigint NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX blobs_by_digest ON blobs (digest);
CREATE TABLE referrers (
    repo text NOT NULL,
    subject text NOT NULL,
    referrer text NOT NULL,
    descriptor jsonb NOT NULL,
    PRIMARY KEY (repo, subject, referrer)
);
CREATE TABLE uploads (
    id text PRIMARY KEY,
    record jsonb NOT NULL
);
CREATE TABLE tag_checked (
    repo text NOT NULL,
    tag text NOT NULL,
    at bigint NOT NULL,
    PRIMARY KEY (repo, tag)
);
CREATE TABLE mirror_referrers (
    repo text NOT NULL,
    subject text NOT NULL,
    index_digest text NOT NULL,
    at bigint NOT NULL,
    PRIMARY KEY (repo, subject)
);
CREATE TABLE rewrites (
    original text NOT NULL,
    plugins text NOT NULL,
    rewritten text NOT NULL,
    PRIMARY KEY (original, plugins)
);
CREATE TABLE last_use (
    repo text NOT NULL,
    reference text NOT NULL,
    at bigint NOT NULL,
    PRIMARY KEY (repo, reference)
);
CREATE TABLE platform_index_children (
    repo text NOT NULL,
    child text NOT NULL,
    index_digest text NOT NULL,
    PRIMARY KEY (repo, child)
);
CREATE TABLE platform_kept_blobs (
    repo text NOT NULL,
    blob text NOT NULL,
    manifest text NOT NULL,
    PRIMARY KEY (repo, blob)
);
CREATE TABLE leases (
    id text PRIMARY KEY,
    record jsonb NOT NULL
);
CREATE TABLE push_journal (
    id bigint PRIMARY KEY,
    record jsonb NOT NULL
);
CREATE SEQUENCE push_journal_ids;
CREATE TABLE push_delivered_blobs (
    endpoint text NOT NULL,
    digest text NOT NULL,
    repo text NOT NULL,
    PRIMARY KEY (endpoint, digest)
);
CREATE TABLE cache_samples (
    at bigint PRIMARY KEY,
    since bigint NOT NULL,
    hits bigint NOT NULL,
    misses bigint NOT NULL,
    bytes_from_cache bigint NOT NULL,
    bytes_from_upstream bigint NOT NULL
);
CREATE TABLE status_records (
    name text PRIMARY KEY,
    record jsonb NOT NULL
);
CREATE TABLE upstream_sent (
    digest text NOT NULL,
    upstream text NOT NULL,
    PRIMARY KEY (digest, upstream)
);
