-- The PostgreSQL ledger: the SQLite ledger's tables (auctioneer/ledger/sqlite_schema.py says what
-- each holds), and what an exchange of several shards shares beside them. Applied by
-- auctioneer.ledger.postgres_schema, in one transaction, idempotently.

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS markets (
    market TEXT PRIMARY KEY,
    definition JSONB NOT NULL,
    opened_at DOUBLE PRECISION NOT NULL,
    seq BIGINT NOT NULL DEFAULT 0,
    closed BYTEA
);
CREATE INDEX IF NOT EXISTS markets_by_opening ON markets (opened_at, market);
CREATE INDEX IF NOT EXISTS open_markets ON markets (opened_at, market) WHERE closed IS NULL;

-- Rounds are numbered from one sequence, in the order shards commit them.
CREATE SEQUENCE IF NOT EXISTS round_ids;
CREATE TABLE IF NOT EXISTS rounds (
    id BIGINT PRIMARY KEY,
    market TEXT NOT NULL REFERENCES markets (market),
    round BIGINT NOT NULL,
    token TEXT,
    seed BYTEA NOT NULL,
    seed_commitment TEXT NOT NULL,
    result_seq BIGINT NOT NULL,
    opened_at DOUBLE PRECISION NOT NULL,
    committed_at DOUBLE PRECISION NOT NULL,
    result BYTEA NOT NULL,
    UNIQUE (market, round)
);
-- A bid, payment or sponsor row names its round (round_id): checked once per statement by a trigger
-- (auctioneer/ledger/postgres_schema.py), not by a foreign key, which runs a query per row.
CREATE TABLE IF NOT EXISTS bids (
    round_id BIGINT NOT NULL,
    agent TEXT NOT NULL,
    bid DOUBLE PRECISION NOT NULL,
    tokens BYTEA NOT NULL,
    probs BYTEA NOT NULL,
    reference INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (round_id, agent)
);
CREATE TABLE IF NOT EXISTS payments (
    round_id BIGINT NOT NULL,
    agent TEXT NOT NULL,
    amount DOUBLE PRECISION NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (round_id, agent)
);
CREATE TABLE IF NOT EXISTS sponsors (
    round_id BIGINT NOT NULL,
    sponsor TEXT NOT NULL,
    share DOUBLE PRECISION NOT NULL CHECK (share > 0 AND share <= 1),
    PRIMARY KEY (round_id, sponsor)
);

-- One budget account per agent for the whole exchange. ``leased`` is what shards hold of it
-- (``slices``); the exchange's invariant, spent + leased <= budget, is a constraint.
CREATE TABLE IF NOT EXISTS accounts (
    agent TEXT PRIMARY KEY,
    budget DOUBLE PRECISION,
    reserved DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    spent DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (spent >= 0),
    leased DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (leased >= 0),
    CONSTRAINT never_overspent CHECK (budget IS NULL OR spent + leased <= budget * (1 + 1e-9) + 1e-9)
);
CREATE TABLE IF NOT EXISTS budgets (
    agent TEXT PRIMARY KEY,
    budget DOUBLE PRECISION CHECK (budget IS NULL OR budget >= 0),
    set_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    agent TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    bound_at DOUBLE PRECISION NOT NULL
);

-- The shards of the exchange: where each serves, until when it counts as alive (database time,
-- Unix seconds), and its own notice seq.
CREATE TABLE IF NOT EXISTS shards (
    shard TEXT PRIMARY KEY,
    market_endpoint TEXT NOT NULL,
    feed_endpoint TEXT NOT NULL,
    alive_until DOUBLE PRECISION NOT NULL,
    exchange_seq BIGINT NOT NULL DEFAULT 0
);
-- Who owns each open market: one shard at a time, until ``expires_at`` unless it renews; ``epoch``
-- rises with every change of owner, and every commit of a market's rounds checks it (fencing).
CREATE TABLE IF NOT EXISTS leases (
    market TEXT PRIMARY KEY REFERENCES markets (market),
    owner TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_owner ON leases (owner);
-- What each shard holds of each agent's budget (the sum, per agent, is accounts.leased).
CREATE TABLE IF NOT EXISTS slices (
    agent TEXT NOT NULL,
    shard TEXT NOT NULL,
    amount DOUBLE PRECISION NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (agent, shard)
);
